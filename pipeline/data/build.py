"""Any supported dataset -> the one manifest every later stage reads.

Every image is decoded once here, so a corrupt file fails the `prepare` stage with a list of
all offending files instead of crashing training hours later on the first one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.config import ADAPTERS, ConfigError
from pipeline.data.adapters import Listing, read_all_idb2, read_cnmc, read_csv, read_folder
from pipeline.io import BadInputError, ImageReadError, file_digest, read_cell_image
from pipeline.labels import CLASSES
from pipeline.manifest import COLUMNS, validate
from pipeline.parallel import parallel_map


def list_dataset(dataset: Mapping[str, Any], root: Path) -> Listing:
    """Dispatch on `dataset.adapter`; the synthetic demo reuses the real layouts' readers."""
    adapter, style = dataset["adapter"], dataset.get("style")
    if adapter == "synthetic":
        if style not in ("smear", "cnmc"):
            raise ConfigError(f"dataset.style: {style!r} must be smear or cnmc for synthetic data")
        adapter = "all_idb2" if style == "smear" else "cnmc"
    if adapter == "cnmc":
        return read_cnmc(root, dataset.get("folds"))
    if adapter == "all_idb2":
        return read_all_idb2(root)
    if adapter == "folder":
        return read_folder(root, dataset.get("classes"), dataset.get("group_pattern"))
    if adapter == "csv":
        return read_csv(
            root,
            dataset.get("labels_file"),
            dataset.get("columns"),
            dataset.get("classes"),
            dataset.get("group_pattern"),
            dataset.get("image_dir"),
        )
    raise ConfigError(f"dataset.adapter: unknown adapter {adapter!r}; known: {ADAPTERS}")


def inspect_image(path: str) -> tuple[str, str | None]:
    """(sha256, problem or None): decode the file fully so a bad one is caught here."""
    try:
        read_cell_image(path)
        return file_digest(path), None
    except (ImageReadError, OSError, cv2.error) as exc:
        return "", str(exc) if isinstance(exc, ImageReadError) else f"{path}: {exc}"


def merge_duplicate_groups(frame: pd.DataFrame) -> pd.Series:
    """Groups joined transitively through byte-identical files, named by their smallest group.

    A bipartite graph of group <-> sha256 nodes: its connected components are the merged groups,
    so a subject and a duplicate chain spanning several subjects end up as one group.
    """
    groups, group_codes = np.unique(frame["group"].to_numpy(), return_inverse=True)
    _, hash_codes = np.unique(frame["sha256"].to_numpy(), return_inverse=True)
    n = len(groups)
    edges = coo_matrix(
        (np.ones(len(frame)), (group_codes, n + hash_codes)), shape=(n + hash_codes.max() + 1,) * 2
    )
    _, component = connected_components(edges, directed=False)
    names = pd.Series(groups).groupby(component[:n]).transform("min").to_numpy()
    return pd.Series(names[group_codes], index=frame.index, name="group")


def label_conflicts(frame: pd.DataFrame) -> tuple[list[str], set[str]]:
    """One problem line per image whose byte-identical copies carry different labels, and their
    sha256s: one image cannot be both ALL and healthy, so one of the folders is wrong (and a
    model would be scored against its own training copy with the other answer)."""
    labels_of = frame.groupby("sha256")["label"].agg(lambda labels: sorted(set(labels)))
    torn = labels_of[labels_of.str.len() > 1]
    problems = []
    for sha, labels in torn.items():
        first, *others = sorted(frame.loc[frame["sha256"] == sha, "path"])
        problems.append(
            f"{first}: byte-identical to {', '.join(others)}, but labelled {' and '.join(labels)}"
        )
    return problems, set(torn.index)


def build_manifest(
    dataset: DictConfig | Mapping[str, Any], workspace: Path
) -> tuple[pd.DataFrame, list[str]]:
    """Read, validate and hash a dataset; return (manifest, quarantined problems).

    A relative `dataset.root` is relative to the `workspace` (the folder the stage runs in),
    and so are the manifest's paths then: the manifest, hence dvc.lock, does not depend on where
    the repository was cloned. An absolute root gives absolute paths.

    With `on_bad_file=error` any bad file raises one BadInputError listing all of them; with
    `skip` they are dropped and returned. Structural problems (missing root, wrong layout, a
    class left without images) raise under either policy.
    """
    if isinstance(dataset, DictConfig):
        dataset = OmegaConf.to_container(dataset, resolve=True)
    named_root = Path(dataset["root"])
    root = named_root if named_root.is_absolute() else Path(workspace) / named_root
    walked = root.resolve() if root.exists() else root
    policy = dataset.get("on_bad_file", "error")
    listing = list_dataset(dataset, walked)
    if listing.fatal_problems:
        raise BadInputError(
            listing.fatal_problems + listing.file_problems, what=f"dataset {dataset['name']}"
        )
    paths = [str(entry.path) for entry in listing.entries]
    inspected = parallel_map(inspect_image, paths, desc=f"validate {dataset['name']}")
    problems = listing.file_problems + [problem for _, problem in inspected if problem]
    if problems and policy != "skip":
        raise BadInputError(problems, what=f"dataset {dataset['name']}: bad files")
    named = [str(named_root / Path(entry.path).relative_to(walked)) for entry in listing.entries]
    frame = pd.DataFrame(
        [
            {
                "id": entry.id,
                "path": path,
                "label": entry.label,
                "group": entry.group,
                "sha256": sha,
                "source": path,
            }
            for entry, path, (sha, problem) in zip(listing.entries, named, inspected, strict=True)
            if not problem
        ],
        columns=list(COLUMNS),
    )
    conflicts, torn = label_conflicts(frame)
    if conflicts and policy != "skip":
        raise BadInputError(conflicts, what=f"dataset {dataset['name']}: one image, two labels")
    frame = frame[~frame["sha256"].isin(torn)]
    problems += conflicts
    empty = [label for label in CLASSES if not (frame["label"] == label).any()]
    if empty:
        raise BadInputError(
            [f"{root}: class '{label}' has no usable images" for label in empty] + problems,
            what=f"dataset {dataset['name']}",
        )
    frame["group"] = merge_duplicate_groups(frame)
    frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
    return validate(frame, where=f"dataset {dataset['name']}"), problems
