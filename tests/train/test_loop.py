"""The generic loop on a tiny MLP: determinism, best-epoch choice, early stopping, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.train import loop
from pipeline.train.device import DeviceSpec
from tests.conftest import train_context

CPU = DeviceSpec(torch.device("cpu"))


def _data(seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, generator=generator)
    y = (x[:, 0] + 0.5 * torch.randn(64, generator=generator) > 0).long()
    return TensorDataset(x, y)


def run(
    work_dir: Path,
    epochs: int = 3,
    lr: float = 0.05,
    poison_after: int | None = None,
    **ctx_kwargs: Any,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Seed, build, fit: what a model's fit() does, minus the images. `poison_after`: the
    weights turn NaN after that epoch (a divergence)."""
    loop.seed_everything(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3))
    model.append(nn.Linear(16, 2))
    if poison_after is not None:

        def poison(epoch: int, row: dict[str, float]) -> None:
            if epoch == poison_after:
                with torch.no_grad():
                    model[0].weight.fill_(float("nan"))

        ctx_kwargs["on_epoch"] = poison
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    generator = torch.Generator().manual_seed(0)
    train = DataLoader(_data(1), batch_size=8, shuffle=True, generator=generator)
    val = DataLoader(_data(2), batch_size=16)
    ctx = train_context(data_dir=work_dir, work_dir=work_dir, image_size=1, **ctx_kwargs)
    config = {"lr": lr, "epochs": epochs}
    history = loop.fit(model, optimizer, train, val, ctx, CPU, epochs, config, scheduler)
    return model, history


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_history_and_checkpoint(tmp_path: Path) -> None:
    seen: list[int] = []
    _, history = run(tmp_path, on_epoch=lambda epoch, row: seen.append(epoch))
    assert [row["epoch"] for row in history] == seen == [1, 2, 3]
    keys = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert all(set(row) == keys for row in history)
    checkpoint = torch.load(tmp_path / loop.CHECKPOINT, weights_only=False)
    assert checkpoint["epoch"] == 3
    assert checkpoint["config"] == {"lr": 0.05, "epochs": 3}
    assert {"model", "optimizer", "scheduler", "rng", "best", "history"} <= set(checkpoint)
    assert not [p for p in tmp_path.iterdir() if p.name != loop.CHECKPOINT]  # no temp leftovers


def test_same_seed_same_weights(tmp_path: Path) -> None:
    first, first_history = run(tmp_path / "a")
    second, second_history = run(tmp_path / "b")
    assert first_history == second_history
    assert same_weights(first, second)
    third, _ = run(tmp_path / "c", lr=0.01)
    assert not same_weights(first, third)  # the comparison can fail


@pytest.mark.parametrize("crash_at", [1, 2])
def test_resume_after_crash_matches_uninterrupted_run(
    tmp_path: Path, crash_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, reference_history = run(tmp_path / "ref")

    def crash(epoch: int, row: dict[str, float]) -> None:
        if epoch == crash_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "crashed", on_epoch=crash)
    trained: list[int] = []
    original = loop.train_one_epoch
    monkeypatch.setattr(
        loop, "train_one_epoch", lambda *a, **k: trained.append(1) or original(*a, **k)
    )
    replayed: list[int] = []
    resumed, history = run(tmp_path / "crashed", on_epoch=lambda e, r: replayed.append(e))
    assert len(trained) == 3 - crash_at
    assert replayed == [1, 2, 3]
    assert history == reference_history
    assert same_weights(resumed, reference)


def test_checkpoint_of_another_config_is_not_resumed(tmp_path: Path) -> None:
    run(tmp_path, epochs=2)
    _, history = run(tmp_path, epochs=2, lr=0.01)
    _, fresh = run(tmp_path / "fresh", epochs=2, lr=0.01)
    assert history == fresh


def test_best_epoch_by_val_loss_and_early_stopping(tmp_path: Path) -> None:
    # A learning rate this high makes val_loss rise after the first epochs.
    model, history = run(tmp_path, epochs=8, lr=3.0, monitor="val_loss", early_stopping_patience=2)
    losses = [row["val_loss"] for row in history]
    best_epoch = losses.index(min(losses)) + 1
    assert len(history) == best_epoch + 2 < 8  # stopped early, two epochs after the best
    checkpoint = torch.load(tmp_path / loop.CHECKPOINT, weights_only=False)
    assert checkpoint["best"]["epoch"] == best_epoch
    assert all(
        torch.equal(v, checkpoint["best"]["state"][k]) for k, v in model.state_dict().items()
    )


def test_unknown_monitor(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train.monitor"):
        run(tmp_path, monitor="f1")


def test_a_diverged_epoch_is_never_kept(tmp_path: Path) -> None:
    model, history = run(tmp_path, epochs=3, poison_after=1)
    assert [row["val_loss"] == row["val_loss"] for row in history] == [True, False, False]
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())  # epoch 1's weights


def test_training_that_diverges_from_the_start_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(loop.TrainingDivergedError, match=r"every epoch \(1-2\).*lower the model"):
        run(tmp_path, epochs=2, lr=float("inf"))
