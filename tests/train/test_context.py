"""The training context: where a model reads its subjects from, when it is asked to."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.train.context import TrainContext
from tests.conftest import train_context, write_folder_manifest


def context(data_dir: Path, subject_balance: bool = True) -> TrainContext:
    return train_context(data_dir, data_dir / "work", subject_balance=subject_balance)


def test_without_subject_balance_there_are_no_groups_and_no_manifest_is_read(
    named_folder: Path,
) -> None:
    paths = [str(p) for p in (named_folder / "train").glob("*/*.png")]
    assert context(named_folder, subject_balance=False).subject_groups(paths) is None


def test_subject_groups_come_from_the_folder_manifest(named_folder: Path) -> None:
    group_of = write_folder_manifest(named_folder)
    paths = [str(p) for p in sorted((named_folder / "train").glob("*/*.png"))]
    assert context(named_folder).subject_groups(paths) == [group_of[Path(p).stem] for p in paths]


def test_subject_groups_name_the_missing_manifest_or_file(named_folder: Path) -> None:
    paths = [str(p) for p in (named_folder / "train").glob("*/*.png")]
    with pytest.raises(ConfigError, match="train.subject_balance.*manifest.csv"):
        context(named_folder).subject_groups(paths)
    write_folder_manifest(named_folder)
    with pytest.raises(ConfigError, match="not in .*manifest.csv, e.g. .*stray.png"):
        context(named_folder).subject_groups([*paths, str(named_folder / "stray.png")])
