"""Typed schema of the whole config tree.

Merging the composed config into these dataclasses is what makes a misspelt key or a value of
the wrong type fail at start-up, naming the full key, instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DatasetConfig:
    name: str = "synthetic"
    adapter: str = "synthetic"  # cnmc | all_idb2 | folder | synthetic
    root: str = "artifacts/demo/smear"
    masks: str | None = None
    classes: dict[str, list[str]] | None = None
    segment: bool = False
    folds: list[int] | None = None
    on_bad_file: str = "error"  # error | skip
    style: str | None = None  # synthetic only: smear | cnmc


@dataclass
class ActiveContourConfig:
    alpha: float = 0.015
    beta: float = 10.0
    gamma: float = 1.0
    w_edge: float = 1.0
    max_num_iter: int = 100
    smoothing_sigma: float = 2.0
    n_points: int = 200


@dataclass
class SegmentConfig:
    method: str = "otsu_active_contour"  # none | otsu | otsu_active_contour
    channel: str = "lab_b"  # gray (paper) | lab_b | saturation
    otsu_classes: int = 3
    min_area_px: int = 100
    opening_radius_px: float = 0.0
    convex_hull: bool = False
    reference_side: int = 257
    fill_holes: bool = True
    active_contour: ActiveContourConfig = field(default_factory=ActiveContourConfig)


@dataclass
class CropConfig:
    rule: str = "bbox"  # bbox | fraction
    threshold: int = 10
    margin: float = 0.05
    fraction: list[float] = field(default_factory=lambda: [0.2, 0.8])
    size: int = 224
    pad_to_square: bool = True


@dataclass
class SplitConfig:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1


@dataclass
class AugmentConfig:
    ops: list[str] = field(default_factory=lambda: ["hflip", "vflip", "rot90", "rot180", "rot270"])
    multiplier: float = 1.43
    splits: list[str] = field(default_factory=lambda: ["train"])


@dataclass
class TrainConfig:
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    monitor: str = "val_accuracy"
    early_stopping_patience: int = 0
    deterministic: bool = True


@dataclass
class EvaluateConfig:
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    explain_samples: int = 8


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment_prefix: str = "all-detect"
    register_best: bool = True
    register_metric: str = "accuracy"


@dataclass
class DemoConfig:
    n_per_class: int = 100
    smear_side: int = 103
    cnmc_side: int = 120
    cnmc_subjects: int = 12
    difficulty: float = 1.0


@dataclass
class GateConfig:
    # Which metrics the CI gate compares; counts (tp, fp, ...) and CI bounds are not gated.
    metrics: list[str] = field(
        default_factory=lambda: [
            "accuracy",
            "precision",
            "recall",
            "f1",
            "balanced_accuracy",
            "roc_auc",
            "cell_dice_mean",
            "nucleus_dice_mean",
        ]
    )
    # Largest allowed drop per metric (absolute); `default` applies to gated metrics not listed.
    tolerances: dict[str, float] = field(
        default_factory=lambda: {
            "accuracy": 0.02,
            "f1": 0.03,
            "roc_auc": 0.02,
            "cell_dice_mean": 0.01,
            "nucleus_dice_mean": 0.01,
            "default": 0.02,
        }
    )


@dataclass
class CvConfig:
    folds: int = 0  # 0 = off; k >= 2: repeated grouped stratified k-fold CV in stage `cv`
    repeats: int = 1


@dataclass
class CrossConfig:
    targets: list[str] = field(default_factory=lambda: ["synthetic_cnmc"])  # conf/dataset names
    roots: dict[str, str] = field(default_factory=dict)  # optional root per target
    on_missing: str = "error"  # error | skip: a target whose root does not exist


@dataclass
class ProbeConfig:
    folds: int = 5
    repeats: int = 1
    bins: int = 8  # histogram bins per colour channel
    warn_roc_auc: float = 0.75  # background-only ROC-AUC above this logs a shortcut warning


@dataclass
class TuneConfig:
    # model name -> {params key: [values]}: the grid `python -m pipeline.stages.tune` searches
    grids: dict[str, Any] = field(default_factory=dict)
    # reuse the rows of reports/tuning/<dataset>/<model>.csv whose settings and data match
    resume: bool = True


@dataclass
class Config:
    seed: int = 42
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    cv: CvConfig = field(default_factory=CvConfig)
    cross: CrossConfig = field(default_factory=CrossConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    # Model sections differ per model kind; each model class validates its own keys.
    models: dict[str, Any] = field(default_factory=dict)
