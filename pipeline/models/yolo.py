"""Ultralytics YOLOv8 classification (paper III.C.5), kept strictly offline.

Ultralytics phones home unless told not to: it checks connectivity, sends analytics (`sync`),
downloads Arial.ttf for plots and weights for AMP checks, and starts its own MLflow (or
ClearML, Comet, DVCLive...) run when those packages are importable. `_ultralytics()` sets
YOLO_OFFLINE=1 before the first import and switches those integrations off in Ultralytics'
settings file (a per-user file: the change persists, which is what an offline project wants);
training passes `plots=False` and absolute `project`/`data` paths so nothing lands in the cwd.
Our own tracking receives the per-epoch metrics through `ctx.on_epoch`.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from pipeline.config import ConfigError
from pipeline.io import atomic_write_text
from pipeline.labels import CLASSES, POSITIVE
from pipeline.models import params
from pipeline.models.base import CamTarget, Classifier, TrainContext
from pipeline.models.weights import UnreadableWeightsError, yolo_weights, yolo_weights_url
from pipeline.train.data import check_images, dataset_fingerprint, image_folder
from pipeline.train.device import pin_threads, pinned_threads, resolve_device
from pipeline.train.history import KEPT

T = TypeVar("T")
log = logging.getLogger(__name__)
# Ultralytics' optimizer names (`BaseTrainer.build_optimizer`), matched without case
OPTIMIZERS = ("auto", "SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "MuSGD")
# Its classifier model names: yolov8n-cls, yolo11s-cls, yolo26x-cls, ...
VARIANT = re.compile(r"yolo(v\d+|\d+)[nslmx]-cls")

WEIGHTS_FILE = "best.pt"
RUN_NAME = "yolo"
STAMP = "yolo_config.json"
INTEGRATIONS_OFF = ("sync", "mlflow", "wandb", "tensorboard", "clearml", "comet", "dvc", "raytune")


def _ultralytics() -> Any:
    """Import Ultralytics offline, with every third-party integration switched off."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import ultralytics
    from ultralytics.utils import torch_utils

    if pinned_threads():  # else Ultralytics resets torch to cores - 1 threads on every call
        torch_utils.NUM_THREADS = pinned_threads()
    stale = {k: False for k in INTEGRATIONS_OFF if ultralytics.settings.get(k, False)}
    if stale:
        ultralytics.settings.update(stale)
    return ultralytics


def _pretrained(ultralytics: Any, variant: str) -> Any:
    """The official `<variant>.pt` weights (`yolo_weights`) as a YOLO model; a file there that
    does not load is an `UnreadableWeightsError` rather than Ultralytics' traceback."""
    path = yolo_weights(variant)
    try:
        return ultralytics.YOLO(str(path))
    except Exception as exc:  # Ultralytics raises TypeError for a damaged checkpoint
        raise UnreadableWeightsError(path, yolo_weights_url(variant), exc) from exc


def _history_from_csv(results_csv: Path) -> list[dict[str, float]]:
    """Ultralytics' results.csv as our history rows (it has no train accuracy)."""
    if not results_csv.exists():
        return []
    with results_csv.open() as handle:
        rows = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    return [_row(int(r["epoch"]), r) for r in rows]


def _mark_kept(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Mark the epoch `best.pt` holds. Ultralytics rewrites it at every epoch whose fitness
    ((top-1 + top-5) / 2, top-5 being 1 with two classes) ties the best, so it is the last
    epoch of the best validation accuracy, not the first that `selected_epoch` would take.
    (`best.pt` itself does not say: stripping it after training sets its epoch to -1.)"""
    scored = [row for row in history if "val_accuracy" in row]
    if not scored:
        return history
    best = max(row["val_accuracy"] for row in scored)
    kept = [row for row in scored if row["val_accuracy"] == best][-1]["epoch"]
    return [{**row, KEPT: 1.0} if row["epoch"] == kept else row for row in history]


def _keeps_torch_threads(method: Callable[..., T]) -> Callable[..., T]:
    """Ultralytics sets torch's process-wide CPU thread count (to cores - 1) whenever it selects
    a device; restore it, so whatever runs next in this process computes as it would alone."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        threads = torch.get_num_threads()
        try:
            return method(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def _row(epoch: int, metrics: dict[str, float]) -> dict[str, float]:
    return {
        "epoch": epoch,
        "train_loss": float(metrics["train/loss"]),
        "val_loss": float(metrics["val/loss"]),
        "val_accuracy": float(metrics["metrics/accuracy_top1"]),
    }


def _data_view(data_dir: Path, view: Path, balance: bool, seed: int) -> Path:
    """A folder of symlinks to the train/val splits: Ultralytics writes `<split>.cache` files
    beside each split, which must not land in the (DVC-tracked) data folder, and it must not
    see the test split. With `balance`, the rarer training class is oversampled (extra links
    to its images, drawn without replacement until the classes match): Ultralytics'
    classifier takes no class weights."""
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    for split in ("train", "val"):
        source = (data_dir / split).resolve()
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: missing {split} split for YOLO training")
        if split == "train" and balance:
            _balanced_links(source, view / split, np.random.default_rng(seed))
        else:
            (view / split).symlink_to(source, target_is_directory=True)
    return view


def _balanced_links(source: Path, target: Path, rng: np.random.Generator) -> None:
    files = {label: sorted((source / label).glob("*.png")) for label in CLASSES}
    largest = max(len(paths) for paths in files.values())
    for label, paths in files.items():
        folder = target / label
        folder.mkdir(parents=True)
        for path in paths:
            (folder / path.name).symlink_to(path)
        for copy, index in enumerate(_oversample(len(paths), largest, rng)):
            (folder / f"{paths[index].stem}__balance{copy}.png").symlink_to(paths[index])


def _oversample(have: int, want: int, rng: np.random.Generator) -> list[int]:
    """Indices of `want - have` extra draws: whole rounds of a permutation, then a partial one."""
    if have == 0:
        return []
    extra = want - have
    rounds = [rng.permutation(have) for _ in range(-(-extra // have))] if extra > 0 else []
    return [int(i) for i in np.concatenate(rounds)[:extra]] if rounds else []


def _portable_checkpoint(source: Path, target: Path) -> None:
    """Copy an Ultralytics checkpoint without what differs between two identical trainings:
    its save date, its timings and the absolute paths of the run folder. The weights, the
    class names and the train arguments that shape prediction stay."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    network = checkpoint.get("ema") or checkpoint["model"]
    for attribute in ("pt_path", "yaml_file"):
        if isinstance(getattr(network, attribute, None), str):
            setattr(network, attribute, sys.intern(Path(getattr(network, attribute)).name))
    network.args = _interned(_portable_args(getattr(network, "args", {}) or {}))
    if isinstance(getattr(network, "yaml", None), dict):
        network.yaml = _interned(network.yaml)
    train_args = _interned(_portable_args(checkpoint.get("train_args") or {}))
    torch.save({"model": network, "train_args": train_args}, target)


def _interned(value: Any) -> Any:
    """`value` with every string interned: pickle writes a string once per object and refers
    back to it after, so equal strings that are one object in one training and two in another
    (Ultralytics shares them by chance) would give two checkpoints different bytes."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {_interned(k): _interned(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_interned(v) for v in value)
    return value


def _portable_args(args: Any) -> dict[str, Any]:
    """Train arguments with absolute paths reduced to their last component."""
    items = vars(args).items() if not isinstance(args, dict) else args.items()
    return {
        key: Path(value).name if isinstance(value, str) and os.path.isabs(value) else value
        for key, value in items
    }


class _Logits(nn.Module):
    """Ultralytics' classifier returns (probabilities, logits) in eval mode; Grad-CAM needs the
    logits alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[1] if isinstance(out, tuple) else out


class YoloClassifier(Classifier):
    """YOLOv8-cls fine-tuned (or trained from the yaml with `pretrained: none`) by Ultralytics.

    Differences from the torchvision loop, all Ultralytics' own: the best epoch is picked by
    its fitness (top-1 accuracy; `train.monitor=val_loss` is not honoured), history rows carry
    no `train_accuracy` (Ultralytics does not measure it), and `deterministic=True` is not
    bit-exact. A killed run resumes from Ultralytics' `last.pt` when the config is unchanged
    (Ultralytics does not checkpoint RNG states, so a resumed run is close to, not identical
    with, an uninterrupted one).
    """

    kind: ClassVar[str] = "yolo"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        params.require(self.config, ("variant", "pretrained", "epochs", "batch_size", "lr"))
        params.choice(self.config, "pretrained", ("imagenet", "none"))
        params.optional_int(self.config, "input_size", minimum=16)
        optimizer = str(self.config.get("optimizer", "auto"))
        if optimizer.lower() not in {name.lower() for name in OPTIMIZERS}:
            raise ConfigError(
                f"{params.section_key(self.config)}.optimizer: {optimizer!r} not in {OPTIMIZERS}"
            )
        if not isinstance(self.config.get("train_args") or {}, dict):
            raise ConfigError(f"{params.section_key(self.config)}.train_args: not a mapping")
        self.model: Any = None
        self.device = "cpu"

    def _check_ultralytics_keys(self) -> None:
        """`train_args` keys Ultralytics knows, and a `variant` it can build, named before any
        training (Ultralytics raises a SyntaxError or only prints)."""
        from ultralytics.cfg import DEFAULT_CFG_DICT

        key = params.section_key(self.config)
        unknown = sorted(set(self.config.get("train_args") or {}) - set(DEFAULT_CFG_DICT))
        if unknown:
            raise ConfigError(f"{key}.train_args: {unknown} are not Ultralytics train arguments")
        variant = str(self.config["variant"])
        if not VARIANT.fullmatch(variant):
            raise ConfigError(
                f"{key}.variant: {variant!r} is not an Ultralytics classifier such as yolov8n-cls"
            )

    @_keeps_torch_threads
    def _fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        pin_threads(ctx.threads)
        ultralytics = _ultralytics()
        self._check_ultralytics_keys()
        self.image_size = self.input_side(ctx)
        device = resolve_device(ctx.device)
        self.device = device.ultralytics
        if ctx.monitor != "val_accuracy":
            log.warning("yolo: Ultralytics selects the best epoch by top-1 accuracy, not %s",
                        ctx.monitor)  # fmt: skip
        work_dir = Path(ctx.work_dir).resolve()
        run_dir = work_dir / RUN_NAME
        stamp = {
            "model": self.config,
            "image_size": self.image_size,
            "seed": ctx.seed,
            "patience": ctx.early_stopping_patience,
            "class_balance": ctx.class_balance,
            # what is in the folder, not its name: a re-split or re-augmented dataset under
            # the same path must not resume a checkpoint trained on the old images
            "data": {
                split: dataset_fingerprint(image_folder(Path(ctx.data_dir), split, None))
                for split in ("train", "val")
            },
        }
        last = run_dir / "weights" / "last.pt"
        resume = self._resumable(work_dir / STAMP, stamp, last)
        if not resume:
            shutil.rmtree(run_dir, ignore_errors=True)
            work_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(work_dir / STAMP, json.dumps(stamp, sort_keys=True))

        relayed: set[int] = set()
        if resume:
            model = ultralytics.YOLO(str(last))
            for row in _history_from_csv(run_dir / "results.csv"):
                self._relay(ctx, row, relayed)
        elif self.config["pretrained"] == "imagenet":
            model = _pretrained(ultralytics, self.config["variant"])
        else:
            model = ultralytics.YOLO(f"{self.config['variant']}.yaml")

        def on_fit_epoch_end(trainer: Any) -> None:
            if "val/loss" not in trainer.metrics:  # the re-validation of best.pt after training
                return  # (also after an early stop, when trainer.epoch < trainer.epochs)
            metrics = {**trainer.label_loss_items(trainer.tloss), **trainer.metrics}
            self._relay(ctx, _row(trainer.epoch + 1, metrics), relayed)

        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
        if resume:
            model.train(resume=True, device=self.device, workers=ctx.num_workers)
        else:
            model.train(
                data=str(
                    _data_view(Path(ctx.data_dir), work_dir / "data", ctx.class_balance, ctx.seed)
                ),
                epochs=int(self.config["epochs"]),
                batch=int(self.config["batch_size"]),
                lr0=float(self.config["lr"]),
                optimizer=self.config.get("optimizer", "auto"),
                patience=ctx.early_stopping_patience or int(self.config.get("patience", 100)),
                imgsz=self.image_size,
                project=str(work_dir),
                name=RUN_NAME,
                exist_ok=True,
                seed=ctx.seed,
                deterministic=ctx.deterministic,
                workers=ctx.num_workers,
                device=self.device,
                amp=ctx.amp,
                plots=False,
                verbose=False,
                **dict(self.config.get("train_args") or {}),
            )
        best = run_dir / "weights" / WEIGHTS_FILE
        self.model = ultralytics.YOLO(str(best if best.exists() else last))
        return _mark_kept(_history_from_csv(run_dir / "results.csv"))

    @staticmethod
    def _relay(ctx: TrainContext, row: dict[str, float], relayed: set[int]) -> None:
        relayed.add(int(row["epoch"]))
        if ctx.on_epoch is not None:
            ctx.on_epoch(int(row["epoch"]), row)

    @staticmethod
    def _resumable(stamp_path: Path, stamp: dict[str, Any], last: Path) -> bool:
        """An interrupted run of the same config: last.pt still holds its optimizer state.

        Ultralytics writes last.pt in place (not atomically): a kill mid-write leaves a torn
        file, which must mean a fresh start, as for the torchvision checkpoints, not a stage
        that fails on every rerun."""
        if not (stamp_path.exists() and last.exists()):
            return False
        try:
            if json.loads(stamp_path.read_text()) != json.loads(json.dumps(stamp, sort_keys=True)):
                return False
            checkpoint = torch.load(last, map_location="cpu", weights_only=False)
        except Exception as error:  # a torn or foreign file must not block a fresh start
            log.warning("yolo: not resuming from %s: unreadable (%s)", last.parent.parent, error)
            return False
        return isinstance(checkpoint, dict) and checkpoint.get("optimizer") is not None

    @_keeps_torch_threads
    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError(f"{self.config.get('name', self.kind)}: not trained or loaded")
        check_images(images)
        if not len(images):
            return np.zeros(0)
        # Ultralytics reads numpy arrays as OpenCV BGR.
        bgr = [cv2.cvtColor(image, cv2.COLOR_RGB2BGR) for image in images]
        batch = int(self.config["batch_size"])
        probs = []
        for start in range(0, len(bgr), batch):
            results = self.model.predict(
                bgr[start : start + batch], imgsz=self.image_size, device=self.device,
                verbose=False,
            )  # fmt: skip
            for result in results:
                names = {name: index for index, name in result.names.items()}
                probs.append(float(result.probs.data[names[POSITIVE]]))
        return np.asarray(probs, dtype=np.float64)

    def cam_target(self) -> CamTarget:
        """The backbone's last block (before the Classify head) of the underlying torch model,
        fed through Ultralytics' own classification transform (what `predict` applies)."""
        if self.model is None:
            raise RuntimeError(f"{self.config.get('name', self.kind)}: not trained or loaded")
        from ultralytics.data.augment import classify_transforms

        network = self.model.model
        transform = classify_transforms(self.image_size)
        index = {name: i for i, name in self.model.names.items()}[POSITIVE]

        def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
            check_images(images)
            return torch.stack([transform(Image.fromarray(image)) for image in images])

        return CamTarget(_Logits(network), [network.model[-2]], to_tensor, index)

    def _save_weights(self, directory: Path) -> None:
        if self.model is None:
            raise RuntimeError(f"{self.config.get('name', self.kind)}: not trained")
        _portable_checkpoint(Path(self.model.ckpt_path), directory / WEIGHTS_FILE)

    def _load_weights(self, directory: Path) -> None:
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():  # Ultralytics would look for a missing name on GitHub
            raise FileNotFoundError(f"{weights}: no such file")
        self.model = _ultralytics().YOLO(str(weights))
        self.device = resolve_device("auto").ultralytics
        missing = set(CLASSES) - set(self.model.names.values())
        if missing:
            raise ValueError(f"{directory / WEIGHTS_FILE}: model lacks classes {sorted(missing)}")
