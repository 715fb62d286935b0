from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _serial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny inputs: worker start-up would cost more than it saves."""
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")


def _write_image(path: Path, seed: int = 0, image: np.ndarray | None = None) -> Path:
    if image is None:
        image = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """Write a tiny valid image; content differs per seed, so hashes differ."""
    return _write_image


@pytest.fixture
def dataset_cfg() -> Callable[..., dict]:
    """A `dataset` config section for `root` (error policy unless overridden)."""

    def make(root: Path, adapter: str, **extra) -> dict:
        return {
            "name": "test",
            "adapter": adapter,
            "root": str(root),
            "on_bad_file": "error",
        } | extra

    return make
