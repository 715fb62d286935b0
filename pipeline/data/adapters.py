"""Dataset layouts -> candidate manifest rows, before any image is opened.

Each reader walks one on-disk layout and returns a `Listing`: the rows it recognised, the
per-file problems it found (quarantinable with `on_bad_file=skip`) and the structural problems
(a missing root, a wrong layout) that make the dataset unusable whatever the policy. Readers
never stop at the first problem, so one error message can list every offending file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.io import IMAGE_SUFFIXES, is_hidden
from pipeline.labels import CLASSES, NEGATIVE, POSITIVE

CNMC_NAME = re.compile(r"^UID_(?P<subject>H?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<label>all|hem)$")
CNMC_FOLD = re.compile(r"^fold_(\d+)$")
ALL_IDB2_NAME = re.compile(r"^Im(?P<number>\d+)_(?P<label>[01])$")
ALL_IDB2_LABELS = {"1": POSITIVE, "0": NEGATIVE}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Ids name files (<id>.png; <label>_<id>__rot270.png ...), and a file name holds 255 bytes
MAX_ID = 160


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
    """Sorted entries of `folder`, without hidden files and OS clutter."""
    return sorted(p for p in folder.iterdir() if not is_hidden(p.name))


def visible_below(folder: Path) -> list[Path]:
    """Sorted files anywhere below `folder`, without hidden ones and OS clutter. Symlinked
    folders are followed (a batch linked in from elsewhere is part of the class), each real
    folder once, so a link cycle cannot loop."""
    found: list[Path] = []
    walked: set[str] = set()
    for current, folders, files in os.walk(folder, followlinks=True, onerror=_unlisted):
        real = os.path.realpath(current)
        if real in walked:
            folders[:] = []
            continue
        walked.add(real)
        folders[:] = sorted(name for name in folders if not is_hidden(name))
        found += [Path(current) / name for name in files if not is_hidden(name)]
    return sorted(found)


def _unlisted(error: OSError) -> None:
    """A folder that cannot be listed (no permission) stops the walk naming it: `os.walk`
    alone skips it without a word, and its images would vanish from the dataset."""
    raise error


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
        seen: dict[str, Path] = {}  # one cell, one id: UID_..bmp beside UID_..png is one cell
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
            elif path.stem in seen:
                listing.file_problems.append(f"{path}: same cell as {seen[path.stem].name}")
            else:
                seen[path.stem] = path
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
        if path.is_dir() and any(is_image(p) for p in visible_below(path)):
            listing.file_problems.append(  # never dropped without a word
                f"{path}: a folder of images; ALL-IDB2's ImNNN_L images lie directly in the root"
            )
        if not (path.is_file() and is_image(path)):  # notes, checksums: not data
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


def _class_mapping(classes: Mapping[str, Iterable[str]] | None, what: str) -> tuple[dict, list]:
    """`classes` as {label: [names]} and the problems with it (both classes, no name twice)."""
    mapping = {label: [str(name) for name in names] for label, names in dict(classes or {}).items()}
    problems = []
    if set(mapping) != set(CLASSES) or not all(mapping.values()):
        problems.append(
            f"dataset.classes must map both 'all' and 'hem' to lists of {what}, got {mapping}"
        )
    shared = set(mapping.get("all", [])) & set(mapping.get("hem", []))
    if shared:
        problems.append(f"dataset.classes: {sorted(shared)} mapped to both classes")
    return mapping, problems


def _subject_group(text: str, group_pattern: str | None) -> str | None:
    """`subject:<s>`, s the `subject` group of `group_pattern` searched in `text` (the whole
    text without a pattern); None when the pattern finds nothing or the subject is empty."""
    match = re.search(group_pattern, text) if group_pattern else None
    subject = text.strip() if group_pattern is None else match and match["subject"]
    return f"subject:{subject}" if subject else None


def read_folder(
    root: Path, classes: Mapping[str, Iterable[str]] | None, group_pattern: str | None = None
) -> Listing:
    """Folder-per-class: `classes` maps 'all'/'hem' to folders under `root`, by name or by
    path for nested ones (several folds: `fold_1/all`, `fold_2/all`).

    Images may be nested anywhere below a class folder. Each image is its own group, unless
    `group_pattern` finds its subject in its path relative to `root` (e.g. a patient folder).
    """
    listing = Listing(fatal_problems=check_root(root))
    mapping, problems = _class_mapping(classes, "folder names")
    listing.fatal_problems += problems
    if listing.fatal_problems:
        return listing
    folder_label = {
        Path(name).as_posix(): label for label, names in mapping.items() for name in names
    }
    listing.fatal_problems += _nested_problems(sorted(folder_label))
    if listing.fatal_problems:
        return listing
    listing.file_problems += _beside_class_folders(root, folder_label)
    listing.fatal_problems += [
        f"{root / name}: folder mapped in dataset.classes is missing"
        for name in sorted(folder_label)
        if not (root / name).is_dir()
    ]
    ids: set[str] = set()
    for name, label in sorted(folder_label.items()):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in visible_below(folder):
            relative = path.relative_to(root)
            if not is_image(path):
                listing.file_problems.append(
                    f"{path}: not an image file (expected {', '.join(IMAGE_SUFFIXES)})"
                )
                continue
            subject_text = relative.as_posix() if group_pattern else None
            _add_entry(listing, path, relative, label, subject_text, group_pattern, ids)
    return listing


def _nested_problems(names: list[str]) -> list[str]:
    """Class folders (paths below the root, e.g. 'fold_1/all') that leave the root or lie
    inside another class folder (its images would be listed under both)."""
    problems = [
        f"dataset.classes: {name!r} must be a folder below the root (no '..', not absolute)"
        for name in names
        if Path(name).is_absolute() or ".." in Path(name).parts or name in ("", ".")
    ]
    problems += [
        f"dataset.classes: {inner!r} lies inside the class folder {outer!r}"
        for outer in names
        for inner in names
        if inner != outer and Path(inner).is_relative_to(outer)
    ]
    return problems


def _beside_class_folders(root: Path, class_folders: Iterable[str]) -> list[str]:
    """What lies beside the class folders, at the root and in each folder on the way to a
    nested one ('fold_1' of 'fold_1/all'): an unmapped folder, or an image in no class."""
    mapped = {Path(name) for name in class_folders}
    on_the_way = {Path(*path.parts[:i]) for path in mapped for i in range(len(path.parts))}
    problems = []
    for folder in sorted(on_the_way):
        if not (root / folder).is_dir():
            continue
        for child in visible_children(root / folder):
            relative = folder / child.name
            if child.is_dir() and relative not in mapped | on_the_way:
                problems.append(f"{child}: class folder not mapped in dataset.classes")
            elif not child.is_dir() and is_image(child):  # a README is not data
                where = "at the dataset root" if folder == Path() else f"in {folder}"
                problems.append(
                    f"{child}: an image {where}, outside every class folder of dataset.classes"
                )
    return problems


def _add_entry(
    listing: Listing,
    path: Path,
    relative: Path,
    label: str,
    subject_text: str | None,
    group_pattern: str | None,
    ids: set[str],
    subject_from: str = "",
) -> None:
    """One entry: its own group when `subject_text` is None, else its subject's (read through
    `group_pattern` when set); a subject that cannot be read is a file problem, naming where the
    text came from (`subject_from`: a table's line and column)."""
    group = None
    if subject_text is not None:
        group = _subject_group(subject_text, group_pattern)
        if group is None:
            how = f" by dataset.group_pattern {group_pattern!r}" if group_pattern else ""
            listing.file_problems.append(
                f"{path}: no subject in {subject_text!r}{subject_from}{how}"
            )
            return
    image_id = _safe_id(relative, ids)
    listing.entries.append(Entry(image_id, path, label, group=group or image_id))


def read_csv(
    root: Path,
    labels_file: str | None,
    columns: Mapping[str, str] | None,
    classes: Mapping[str, Iterable[str]] | None,
    group_pattern: str | None = None,
    image_dir: str | None = None,
) -> Listing:
    """A table of labels: `labels_file` (a file inside `root`) lists each image's path under
    `root / image_dir` and its label, which `classes` maps to 'all'/'hem'. The subject is read
    from the `subject` column when there is one, else from the path, through `group_pattern`
    when set; with neither, each image is its own group. Images the table does not list are
    file problems too: an unlabelled image is never dropped silently. The table must lie inside
    `root`: DVC tracks the root folder, so an edited label outside it would not re-run ingest.
    """
    listing = Listing(fatal_problems=check_root(root))
    mapping, problems = _class_mapping(classes, "label values")
    listing.fatal_problems += problems
    names = dict(columns or {})
    if not {"path", "label"} <= set(names):
        listing.fatal_problems.append(
            f"dataset.columns must name the table's 'path' and 'label' columns, got {names}"
        )
    root = Path(os.path.normpath(root))
    table_path = Path(os.path.normpath(root / labels_file)) if labels_file else None
    images = Path(os.path.normpath(root / (image_dir or ".")))
    if table_path is not None and not table_path.is_relative_to(root):
        listing.fatal_problems.append(
            f"dataset.labels_file: {table_path} lies outside dataset.root ({root}), which is what "
            "DVC tracks: an edited label would not re-run ingest. Set root to a folder holding "
            "both the table and the images, and image_dir to the images' folder below it"
        )
    elif table_path is None or not table_path.is_file():
        listing.fatal_problems.append(f"{table_path}: labels table missing (dataset.labels_file)")
    if root.is_dir() and (not images.is_relative_to(root) or not images.is_dir()):
        listing.fatal_problems.append(
            f"dataset.image_dir: {images} is not a folder below dataset.root ({root})"
        )
    if listing.fatal_problems:
        return listing
    try:
        table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        listing.fatal_problems.append(f"{table_path}: not a readable CSV table ({exc})")
        return listing
    absent = {key: name for key, name in names.items() if name not in table.columns}
    if absent:
        listing.fatal_problems += [
            f"{table_path}: no column {name!r} (dataset.columns.{key}); "
            f"its columns: {list(table.columns)}"
            for key, name in absent.items()
        ]
        return listing
    value_label = {str(value): label for label, values in mapping.items() for value in values}
    listed: dict[Path, int] = {}
    names_in: dict[Path, dict[str, list[str]]] = {}  # folder listings, for missing files
    ids: set[str] = set()
    for line, row in enumerate(table.to_dict("records"), start=2):
        where = f"{table_path.name}:{line}"
        # Cells padded with blanks (", " separators, trailing spaces) read trimmed, as the label
        row = {column: value.strip() for column, value in row.items()}
        path = Path(os.path.normpath(images / row[names["path"]]))
        if not path.is_relative_to(images):
            listing.file_problems.append(f"{where}: {path} lies outside {images}")
            continue
        if path in listed:
            listing.file_problems.append(
                f"{where}: {path} listed again (first on line {listed[path]})"
            )
            continue
        listed[path] = line
        label = value_label.get(row[names["label"]])
        if label is None:
            listing.file_problems.append(
                f"{where}: unknown label {row[names['label']]!r} for {path} "
                f"(dataset.classes maps {sorted(value_label)})"
            )
        elif not (path.is_file() and is_image(path)):
            listing.file_problems.append(f"{where}: {_not_an_image(path, images, names_in)}")
        else:
            column = names["subject"] if "subject" in names else group_pattern and names["path"]
            _add_entry(
                listing,
                path,
                path.relative_to(images),
                label,
                row[column] if column else None,
                group_pattern,
                ids,
                subject_from=f" ({where}, column {column!r})",
            )
    listing.file_problems += [
        f"{path}: image not listed in {table_path}"
        for path in visible_below(images)
        if path.is_file() and is_image(path) and path not in listed
    ]
    return listing


def _not_an_image(path: Path, images: Path, names_in: dict[Path, dict[str, list[str]]]) -> str:
    """Why a file the table lists cannot be read: not there (naming a file whose name differs
    only in case, e.g. 1.BMP for 1.bmp: the same file on Windows and macOS, not here), or not
    an image. `names_in` caches each folder's names by their lower case: a table whose every
    row has the wrong case would otherwise list and scan its folder once per row."""
    if path.exists():
        return f"{path} is not an image file under {images}"
    folder = path.parent
    if folder not in names_in:
        names_in[folder] = {}
        for entry in folder.iterdir() if folder.is_dir() else ():
            names_in[folder].setdefault(entry.name.lower(), []).append(entry.name)
    other_case = sorted(names_in[folder].get(path.name.lower(), []))
    hint = (
        f" ({', '.join(other_case)} is there: file names are case-sensitive)" if other_case else ""
    )
    return f"{path}: no such file under {images}{hint}"


def _safe_id(relative: Path, taken: set[str]) -> str:
    """A file-name-safe id from a relative path; a hash suffix resolves sanitising collisions
    and stands for the middle of an id longer than MAX_ID (deeply nested, long names)."""
    base = _UNSAFE.sub("_", "__".join((*relative.parts[:-1], relative.stem)))
    if len(base) > MAX_ID:
        digest = hashlib.sha1(str(relative).encode()).hexdigest()[:8]
        base = f"{base[: MAX_ID // 2 - 5]}_{digest}_{base[-(MAX_ID // 2 - 5) :]}"
    candidate = base
    if candidate in taken:
        candidate = f"{base}_{hashlib.sha1(str(relative).encode()).hexdigest()[:8]}"
    taken.add(candidate)
    return candidate
