"""DataLoader workers (`train.num_workers`, for GPU hosts) change where images are decoded,
not what a training run sees: the seeded order holds, and a run repeats itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.labels import CLASSES
from pipeline.train.data import eval_transform, image_folder, make_loader, train_transform


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in CLASSES:
        (root / "train" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / label / f"{label}_{i}.png")
    return root


def _batches(root: Path, transform, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(5)
    dataset = image_folder(root, "train", transform)
    loader = make_loader(dataset, 4, shuffle=True, seed=3, num_workers=workers)
    return list(loader)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b, strict=True)
    )


def test_workers_keep_the_seeded_order_and_repeat_themselves(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    plain = _batches(root, eval_transform(8), workers=0)
    assert _same(plain, _batches(root, eval_transform(8), workers=2))
    flipped = _batches(root, train_transform(8), workers=2)
    assert _same(flipped, _batches(root, train_transform(8), workers=2))


def test_color_jitter_changes_the_cells_colour_and_keeps_the_background_black() -> None:
    """A stain-like jitter recolours the cell, never the segmented black background (so the
    network cannot learn the jitter from it), and follows torch's seeded RNG."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = (150, 90, 170)  # a purple cell on black
    jitter = {"brightness": 0.25, "saturation": 0.25, "hue": 0.04}
    plain = train_transform(32)
    jittered = train_transform(32, jitter)
    background = eval_transform(32)(Image.fromarray(np.zeros((32, 32, 3), np.uint8)))[:, 0, 0]

    def draw(transform, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return transform(Image.fromarray(image))

    outputs = [draw(jittered, seed) for seed in range(4)]
    for out in outputs:
        assert torch.allclose(out[:, 0, 0], background, atol=1e-6)  # black stays black
    cell_colours = {tuple(out[:, 16, 16].round(decimals=3).tolist()) for out in outputs}
    assert len(cell_colours) == 4  # every draw recolours the cell
    assert torch.equal(draw(jittered, 1), outputs[1])  # seeded: reproducible
    unjittered = eval_transform(32)(Image.fromarray(image))[:, 16, 16]
    assert torch.equal(draw(plain, 0)[:, 16, 16], unjittered)  # null: no jitter


def test_weighted_loader_draws_by_weight_from_its_seed(tmp_path: Path) -> None:
    """Only images with weight are drawn, an epoch has as many as the folder, and the same
    seed draws the same epoch; a sampler and weights together are refused."""
    dataset = image_folder(_folder(tmp_path), "train", eval_transform(8))
    weights = [0.0] * 6 + [1.0] * 6  # ImageFolder's order: the 6 "all" images, then "hem"

    def epoch(seed: int) -> list[int]:
        loader = make_loader(dataset, 4, shuffle=True, seed=seed, weights=weights)
        return [int(t) for _, targets in loader for t in targets]

    drawn = epoch(3)
    assert len(drawn) == 12 and set(drawn) == {CLASSES.index("hem")}
    assert epoch(3) == drawn
    with pytest.raises(ValueError, match="not both"):
        make_loader(dataset, 4, shuffle=True, seed=3, weights=weights, sampler=[0, 1])
