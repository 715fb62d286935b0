"""What a model needs to train besides its own hyperparameters, built once from the config."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.config import ConfigError
from pipeline.schema import TrainConfig

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(kw_only=True)
class TrainContext(TrainConfig):
    """The `train` section (device, threads, class balance, monitor, ...) plus where to read
    and write: one type, so a new training knob is declared once, in the schema."""

    data_dir: Path  # holds train/ and val/ image folders
    work_dir: Path  # checkpoints for resuming live here (kept across a crash)
    image_size: int
    seed: int = 42
    on_epoch: EpochCallback | None = None  # per-epoch metrics (train_loss, val_accuracy, ...)

    def __post_init__(self) -> None:
        unset = [f.name for f in fields(TrainConfig) if getattr(self, f.name) == MISSING]
        if unset:
            raise ConfigError(
                f"TrainContext needs every train.* setting, missing {unset}: build it with "
                "TrainContext.from_config(cfg, ...) (defaults live in conf/train/default.yaml)"
            )

    @classmethod
    def from_config(
        cls,
        cfg: DictConfig,
        data_dir: Path,
        work_dir: Path,
        on_epoch: EpochCallback | None = None,
    ) -> TrainContext:
        """The context the train stage and every CV fold use: `train.*`, `crop.size`, `seed`."""
        train: dict[str, Any] = OmegaConf.to_container(cfg.train, resolve=True)
        return cls(
            **train,
            data_dir=Path(data_dir),
            work_dir=Path(work_dir),
            image_size=int(cfg.crop.size),
            seed=int(cfg.seed),
            on_epoch=on_epoch,
        )

    def subject_groups(self, paths: Sequence[str]) -> list[str] | None:
        """The subject of each training file when `train.subject_balance` asks for it (None
        otherwise), from the dataset folder's `manifest.csv`, which the augment stage and every
        CV fold write."""
        if not self.subject_balance:
            return None
        from pipeline import manifest

        source = self.data_dir / "manifest.csv"
        if not source.is_file():
            raise ConfigError(
                f"train.subject_balance: {source} is missing; the dataset folder must come from "
                "the augment stage or a CV fold, which write the groups of its images there"
            )
        frame = manifest.read(source)
        group_of = dict(zip(frame["id"], frame["group"], strict=True))
        unknown = [p for p in paths if Path(p).stem not in group_of]
        if unknown:
            raise ConfigError(
                f"train.subject_balance: {len(unknown)} training files are not in {source}, "
                f"e.g. {unknown[0]}"
            )
        return [group_of[Path(p).stem] for p in paths]
