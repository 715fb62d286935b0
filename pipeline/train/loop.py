"""The training loop every torchvision model uses, in the style of torchvision's references.

`train_one_epoch` / `evaluate` are plain functions; `fit` adds what a long run needs: a
checkpoint after every epoch (`<work_dir>/last.pt`, written atomically) carrying model,
optimizer, scheduler, history, best state and every RNG state, so that a killed run started
again with the same config continues where it stopped and, on CPU with the same seed, ends with
the same weights and metrics as a run that was never interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from pipeline.config import MONITORS
from pipeline.io import atomic_path
from pipeline.train import distributed
from pipeline.train.device import DeviceSpec
from pipeline.train.history import TrainingDivergedError, diverged

if TYPE_CHECKING:
    from pipeline.train.context import TrainContext

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; ask torch for deterministic kernels where it has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def _train_mode(model: nn.Module) -> None:
    """model.train(), except frozen BatchNorm layers keep their ImageNet running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    amp: bool,
    desc: str = "train",
) -> tuple[float, float]:
    """One pass over `loader`; returns (mean loss, accuracy)."""
    _train_mode(model)
    total_loss, correct, seen = 0.0, 0, 0
    for images, targets in tqdm(loader, desc=desc, leave=False, mininterval=1.0):
        images, targets = images.to(device, non_blocking=True), targets.to(device)
        with _autocast(device, amp):
            logits = model(images)
            loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    total_loss, correct, seen = distributed.sum_across(total_loss, correct, seen)
    return total_loss / seen, correct / seen


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    device: torch.device,
    amp: bool,
    desc: str = "val",
) -> tuple[float, float]:
    """Mean loss and accuracy on `loader` in eval mode."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, targets in tqdm(loader, desc=desc, leave=False, mininterval=1.0):
        images, targets = images.to(device, non_blocking=True), targets.to(device)
        with _autocast(device, amp):
            logits = model(images)
            loss = criterion(logits.float(), targets)
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    total_loss, correct, seen = distributed.sum_across(total_loss, correct, seen)
    return total_loss / seen, correct / seen


def _rng_state(loader: DataLoader) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "loader": loader.generator.get_state() if loader.generator is not None else None,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], loader: DataLoader) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("loader") is not None and loader.generator is not None:
        loader.generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}


def _canonical(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def load_checkpoint(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` if it was written for this exact `config`, else None."""
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a torn or foreign file must not block a fresh start
        log.warning("ignoring unreadable checkpoint %s: %s", path, error)
        return None
    if _canonical(checkpoint.get("config", {})) != _canonical(config):
        log.warning("ignoring checkpoint %s: it was written for another config", path)
        return None
    return checkpoint


@dataclass
class _Best:
    score: float | None = None
    epoch: int = 0
    state: dict[str, torch.Tensor] | None = None
    stale_epochs: int = 0


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: DataLoader,
    val_loader: DataLoader,
    ctx: TrainContext,
    device: DeviceSpec,
    epochs: int,
    config: dict[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    criterion: nn.Module | None = None,
) -> list[dict[str, float]]:
    """Train `model` (already on `device`) for `epochs`; leave the best weights in it.

    `config` is everything that defines the run (model hyperparameters, image size, seed,
    monitor...): a checkpoint is only resumed when its config is identical. The best epoch is
    chosen by `ctx.monitor`; `ctx.early_stopping_patience` > 0 stops after that many epochs
    without improvement. On resume the restored epochs are replayed to `ctx.on_epoch`, so a
    fresh tracking run still receives the whole curve.
    """
    if ctx.monitor not in MONITORS:
        raise ValueError(f"train.monitor={ctx.monitor!r}: expected one of {sorted(MONITORS)}")
    better = MONITORS[ctx.monitor]
    criterion = criterion or nn.CrossEntropyLoss()
    amp = ctx.amp and device.device.type == "cuda"
    scaler = torch.amp.GradScaler(device.device.type, enabled=amp)
    ckpt_path = Path(ctx.work_dir) / CHECKPOINT
    history: list[dict[str, float]] = []
    best = _Best()
    start = 1

    rank = 0 if not distributed.active() else torch.distributed.get_rank()
    checkpoint = load_checkpoint(ckpt_path, config)
    if checkpoint is not None:
        _unwrap(model).load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None and checkpoint.get("scheduler") is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        history = checkpoint["history"]
        best = _Best(**checkpoint["best"])
        states = checkpoint["rng"]  # one per rank under DDP
        _set_rng_state(states[rank] if isinstance(states, list) else states, train_loader)
        start = checkpoint["epoch"] + 1
        log.info("resuming from %s after epoch %d", ckpt_path, checkpoint["epoch"])
        if ctx.on_epoch is not None and distributed.is_main():
            for row in history:
                ctx.on_epoch(int(row["epoch"]), row)

    stopped = checkpoint is not None and checkpoint.get("stopped", False)
    for epoch in range(start, epochs + 1):
        if stopped:
            break
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)  # a new shuffle every epoch, same on all ranks
        train_loss, train_acc = train_one_epoch(
            model, train_loader, criterion, optimizer, device.device, scaler, amp,
            desc=f"epoch {epoch}/{epochs} train",
        )  # fmt: skip
        val_loss, val_acc = evaluate(
            model, val_loader, criterion, device.device, amp, desc=f"epoch {epoch}/{epochs} val"
        )
        if scheduler is not None:
            scheduler.step()
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
        }
        history.append(row)
        score = row[ctx.monitor]
        kept = not diverged(row)
        if not kept:
            log.warning("epoch %d/%d diverged (non-finite loss): not kept %s", epoch, epochs, row)
        if kept and (
            best.score is None or (score != best.score and better(score, best.score) == score)
        ):
            best = _Best(score, epoch, _cpu_state(model), 0)
        else:
            best.stale_epochs += 1
        patience = ctx.early_stopping_patience
        stopped = patience > 0 and best.stale_epochs >= patience
        states = distributed.gather(_rng_state(train_loader))
        if distributed.is_main():  # rank 0 alone writes; every rank can resume from it
            _save_checkpoint(
                ckpt_path,
                {
                    "model": _cpu_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "best": vars(best),
                    "rng": states if distributed.active() else states[0],
                    "config": config,
                    "stopped": stopped,
                },
            )
            log.info("epoch %d/%d %s", epoch, epochs, row)
            if ctx.on_epoch is not None:
                ctx.on_epoch(epoch, row)
        distributed.barrier()
        if stopped:
            log.info("early stopping after epoch %d (best epoch %d)", epoch, best.epoch)

    if best.state is None and history:
        raise TrainingDivergedError(
            f"training diverged: every epoch (1-{len(history)}) ended with a non-finite loss "
            f"(last: {history[-1]}); lower the model's `lr`, or train more layers at a smaller one"
        )
    if best.state is not None:
        _unwrap(model).load_state_dict(best.state)
    return history


def _save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write beside `path` then rename, so a kill mid-write leaves the previous checkpoint."""
    with atomic_path(path) as staged:
        torch.save(checkpoint, staged)
