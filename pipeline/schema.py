"""Typed schema of the whole config tree: types only, no default values.

Merging the composed config into these dataclasses is what makes a misspelt key or a value of
the wrong type fail at start-up, naming the full key, instead of being silently ignored. Every
default lives in the YAML under conf/ (the paper's values, documented there): a field here is
MISSING, so a key that conf/ forgets to set fails loudly too. The optional keys are the dataset
keys of one adapter, or of datasets with masks, only (`OPTIONAL_DATASET_KEYS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class DatasetConfig:
    name: str = MISSING
    adapter: str = MISSING  # cnmc | all_idb2 | folder | csv | synthetic
    root: str = MISSING
    masks: str | None = MISSING
    classes: dict[str, list[str]] | None = MISSING
    segment: bool = MISSING
    folds: list[int] | None = MISSING
    on_bad_file: str = MISSING  # error | skip
    # Keys of one adapter only, so optional (OPTIONAL_DATASET_KEYS): a dataset YAML written
    # for another adapter need not state them.
    style: str | None = None  # synthetic only: smear | cnmc
    # folder and csv only: a regex whose named group `subject` reads the subject from the path
    # (csv: from the subject column when named), so no subject spans two splits or folds
    group_pattern: str | None = None
    labels_file: str | None = None  # csv only: the labels table, inside root (DVC tracks root)
    image_dir: str | None = None  # csv only: the folder below root the table's paths start from
    columns: dict[str, str] | None = None  # csv only: path, label and optional subject columns
    # with masks only: the masks' colour per region (config.mask_colours); null = ALL-IDB2's
    mask_code: dict[str, Any] | None = None


OPTIONAL_DATASET_KEYS = (
    "style",
    "group_pattern",
    "labels_file",
    "image_dir",
    "columns",
    "mask_code",
)


@dataclass
class ActiveContourConfig:
    alpha: float = MISSING
    beta: float = MISSING
    gamma: float = MISSING
    w_edge: float = MISSING
    max_num_iter: int = MISSING
    smoothing_sigma: float = MISSING
    n_points: int = MISSING


@dataclass
class SegmentConfig:
    method: str = MISSING  # none | otsu | otsu_active_contour
    channel: str = MISSING  # gray (paper) | lab_b | saturation
    otsu_classes: int = MISSING
    min_area_px: int = MISSING
    opening_radius_px: float = MISSING
    convex_hull: bool = MISSING
    reference_side: int = MISSING
    fill_holes: bool = MISSING
    active_contour: ActiveContourConfig = field(default_factory=ActiveContourConfig)


@dataclass
class CropConfig:
    rule: str = MISSING  # bbox | fraction
    threshold: int = MISSING
    margin: float = MISSING
    fraction: list[float] = MISSING
    size: int = MISSING
    pad_to_square: bool = MISSING


@dataclass
class SplitConfig:
    train: float = MISSING
    val: float = MISSING
    test: float = MISSING
    group_by: str = MISSING  # subject | none (the paper's image-level protocol)
    tolerance: float = MISSING


@dataclass
class AugmentConfig:
    ops: list[str] = MISSING
    multiplier: float = MISSING
    splits: list[str] = MISSING


@dataclass
class TrainConfig:
    device: str = MISSING
    amp: bool = MISSING
    num_workers: int = MISSING
    monitor: str = MISSING
    early_stopping_patience: int = MISSING
    deterministic: bool = MISSING
    threads: int | None = MISSING  # CPU threads for torch (and Ultralytics); null = their default
    class_balance: bool = MISSING  # weight classes inversely to their training-split frequency
    subject_balance: bool = MISSING  # every training subject of a class weighs the same
    strategy: str = MISSING  # auto | ddp (DistributedDataParallel on the CPU too)
    processes: int = MISSING  # DDP ranks on the CPU with strategy ddp


@dataclass
class EvaluateConfig:
    bootstrap_samples: int = MISSING
    confidence: float = MISSING
    explain_samples: int = MISSING
    collapse_share: float = MISSING


@dataclass
class TrackingConfig:
    uri: str | None = MISSING
    experiment_prefix: str = MISSING
    register_best: bool = MISSING
    register_metric: str = MISSING


@dataclass
class DemoConfig:
    n_per_class: int = MISSING
    smear_side: int = MISSING
    cnmc_side: int = MISSING
    cnmc_subjects: int = MISSING
    difficulty: float = MISSING


@dataclass
class GateConfig:
    # gated metric -> direction (higher | lower); see conf/gate/default.yaml
    metrics: dict[str, str] = MISSING
    tolerances: dict[str, float] = MISSING
    floors: dict[str, float] = MISSING
    ci_scale: float = MISSING  # allowed change >= ci_scale x the baseline's CI half-width
    flags: list[str] = MISSING
    flags_only: list[str] = MISSING  # globs of metrics files gated on their flags alone


@dataclass
class CvConfig:
    folds: int = MISSING  # 0 = off; k >= 2: repeated grouped stratified k-fold CV in stage `cv`
    repeats: int = MISSING
    nested: bool = MISSING  # choose among tune.grids candidates inside each fold


@dataclass
class CrossConfig:
    targets: list[str] = MISSING  # conf/dataset names
    roots: dict[str, str] = MISSING  # optional root per target
    on_missing: str = MISSING  # error | skip: a target whose root does not exist


@dataclass
class ProbeConfig:
    folds: int = MISSING
    repeats: int = MISSING
    bins: int = MISSING  # histogram bins per colour channel
    warn_roc_auc: float = MISSING  # background-only ROC-AUC above this logs a shortcut warning


@dataclass
class TuneConfig:
    # model name -> {params key: [values]}: the grid `python -m pipeline.stages.tune` searches
    grids: dict[str, Any] = MISSING
    # reuse the rows of reports/tuning/<dataset>/<model>.csv whose settings and data match
    resume: bool = MISSING


@dataclass
class EnsembleConfig:
    members: list[str] = MISSING
    weights: list[float] | None = MISSING
    top_k: int | None = MISSING  # null: every member; k: the k best members on validation


@dataclass
class Config:
    seed: int = MISSING
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
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    # Model sections differ per model kind; each model class validates its own keys.
    models: dict[str, Any] = MISSING
