"""Dataset layouts -> candidate manifest rows, before any image is opened.

Each reader walks one on-disk layout and returns a `Listing`: the rows it recognised, the
per-file problems it found (quarantinable with `on_bad_file=skip`) and the structural problems
(a missing root, a wrong layout) that make the dataset unusable whatever the policy. Readers
never stop at the first problem, so one error message can list every offending file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.io import IMAGE_SUFFIXES
from pipeline.labels import CLASSES, NEGATIVE, POSITIVE

CNMC_NAME = re.compile(r"^UID_(?P<subject>H?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<label>all|hem)$")
CNMC_FOLD = re.compile(r"^fold_(\d+)$")
ALL_IDB2_NAME = re.compile(r"^Im(?P<number>\d+)_(?P<label>[01])$")
ALL_IDB2_LABELS = {"1": POSITIVE, "0": NEGATIVE}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Entry:
    id: str
    path: Path
    label: str
    group: str


@dataclass
class Listing:
    entries: list[Entry] = field(default_factory=list)
    file_problems: list[str] = field(default_factory=list)
    fatal_problems: list[str] = field(default_factory=list)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def visible_children(folder: Path) -> list[Path]:
    """Sorted entries of `folder`, without hidden files (.DS_Store, ._* resource forks)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def check_root(root: Path) -> list[str]:
    if not root.exists():
        return [f"{root}: dataset root does not exist (set dataset.root)"]
    if not root.is_dir():
        return [f"{root}: dataset root is not a folder"]
    return []


def read_cnmc(root: Path, folds: Iterable[int] | None) -> Listing:
    """C-NMC 2019: `<root>/training_data/fold_N/{all,hem}/UID_<subj>_<img>_<cell>_<label>.bmp`.

    The group is the subject, so that cells of one patient never straddle train and test.
    """
    listing = Listing(fatal_problems=check_root(root))
    if listing.fatal_problems:
        return listing
    training = root / "training_data"
    present = (
        {
            int(m.group(1)): p
            for p in visible_children(training)
            if p.is_dir() and (m := CNMC_FOLD.match(p.name))
        }
        if training.is_dir()
        else {}
    )
    if not present:
        listing.fatal_problems.append(
            f"{root}: not a C-NMC layout: expected {training}/fold_N/{{all,hem}}/UID_*.bmp"
        )
        return listing
    wanted = sorted(present) if folds is None else sorted({int(f) for f in folds})
    for fold in wanted:
        if fold not in present:
            listing.fatal_problems.append(
                f"{training / f'fold_{fold}'}: fold requested by dataset.folds is missing "
                f"(present: {sorted(present)})"
            )
            continue
        _read_cnmc_fold(present[fold], fold, listing)
    return listing


def _read_cnmc_fold(folder: Path, fold: int, listing: Listing) -> None:
    for label in CLASSES:
        if not (folder / label).is_dir():
            listing.fatal_problems.append(f"{folder / label}: class folder missing")
    for child in visible_children(folder):
        if child.name not in CLASSES:
            listing.file_problems.append(f"{child}: unexpected entry (expected only all/, hem/)")
            continue
        for path in visible_children(child):
            match = CNMC_NAME.match(path.stem)
            if not (path.is_file() and is_image(path) and match):
                listing.file_problems.append(
                    f"{path}: name does not match UID_<subject>_<image>_<cell>_{child.name}.bmp"
                )
            elif match["label"] != child.name:
                listing.file_problems.append(
                    f"{path}: label '{match['label']}' in the name disagrees with folder "
                    f"'{child.name}'"
                )
            else:
                listing.entries.append(
                    Entry(
                        id=f"fold{fold}_{child.name}_{path.stem}",
                        path=path,
                        label=child.name,
                        group=f"subject:{match['subject']}",
                    )
                )


def read_all_idb2(root: Path) -> Listing:
    """ALL-IDB2: `<root>/ImNNN_L.{tif,jpg,png}`, L=1 blast, L=0 healthy; one group per image."""
    listing = Listing(fatal_problems=check_root(root))
    if listing.fatal_problems:
        return listing
    seen: dict[str, Path] = {}
    for path in visible_children(root):
        if not (path.is_file() and is_image(path)):
            continue
        match = ALL_IDB2_NAME.match(path.stem)
        if not match:
            listing.file_problems.append(
                f"{path}: unknown label: name does not match ImNNN_L (L=1 ALL, L=0 healthy)"
            )
        elif path.stem in seen:
            listing.file_problems.append(f"{path}: same image id as {seen[path.stem].name}")
        else:
            seen[path.stem] = path
            listing.entries.append(
                Entry(
                    id=path.stem, path=path, label=ALL_IDB2_LABELS[match["label"]], group=path.stem
                )
            )
    if not listing.entries and not listing.file_problems:
        listing.fatal_problems.append(f"{root}: no ImNNN_L images (not an ALL-IDB2 layout)")
    return listing


def read_folder(root: Path, classes: Mapping[str, Iterable[str]] | None) -> Listing:
    """Folder-per-class: `classes` maps 'all'/'hem' to folder names under `root`.

    Images may be nested anywhere below a class folder; each image is its own group.
    """
    listing = Listing(fatal_problems=check_root(root))
    mapping = {label: list(names) for label, names in dict(classes or {}).items()}
    if set(mapping) != set(CLASSES) or not all(mapping.values()):
        listing.fatal_problems.append(
            f"dataset.classes must map both 'all' and 'hem' to lists of folder names, got {mapping}"
        )
    shared = set(mapping.get("all", [])) & set(mapping.get("hem", []))
    if shared:
        listing.fatal_problems.append(f"dataset.classes: {sorted(shared)} mapped to both classes")
    if listing.fatal_problems:
        return listing
    folder_label = {name: label for label, names in mapping.items() for name in names}
    present = {p.name for p in visible_children(root) if p.is_dir()}
    unmapped = sorted(present - set(folder_label))
    listing.file_problems += [
        f"{root / name}: class folder not mapped in dataset.classes" for name in unmapped
    ]
    listing.fatal_problems += [
        f"{root / name}: folder mapped in dataset.classes is missing"
        for name in sorted(set(folder_label) - present)
    ]
    ids: set[str] = set()
    for name, label in sorted(folder_label.items()):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or path.is_dir():
                continue
            if not is_image(path):
                listing.file_problems.append(f"{path}: not an image file ({IMAGE_SUFFIXES})")
                continue
            image_id = _safe_id(relative, ids)
            listing.entries.append(Entry(image_id, path, label, group=image_id))
    return listing


def _safe_id(relative: Path, taken: set[str]) -> str:
    """A file-name-safe id from a relative path; a hash suffix resolves sanitising collisions."""
    base = _UNSAFE.sub("_", "__".join((*relative.parts[:-1], relative.stem)))
    candidate = base
    if candidate in taken:
        candidate = f"{base}_{hashlib.sha1(str(relative).encode()).hexdigest()[:8]}"
    taken.add(candidate)
    return candidate
