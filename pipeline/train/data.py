"""Image-folder datasets and the transforms every torchvision model shares.

Training and prediction go through the same `eval_transform`, so a saved model sees at
predict time exactly the tensors it was validated on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler, WeightedRandomSampler
from torchvision import transforms
from torchvision.datasets import ImageFolder

from pipeline.io import BadInputError
from pipeline.labels import CLASSES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(image_size: int) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


COLOR_JITTER_KEYS = ("brightness", "saturation", "hue")


def train_transform(
    image_size: int, color_jitter: Mapping[str, float] | None = None
) -> transforms.Compose:
    """Eval transform plus flips (cell images have no canonical orientation) and, where asked,
    a colour jitter: each subject's stain and illumination differ, so a network trained on a
    few subjects' colours may key on them. Only jitters that keep black black (brightness
    scales, saturation blends with grey levels, hue rotates): contrast would lift a segmented
    cell's black background towards the image's mean grey.

    Flips and jitter draw from torch's global RNG, which the loop seeds and checkpoints, so
    they stay reproducible across a resume.
    """
    jitter = [transforms.ColorJitter(**dict(color_jitter))] if color_jitter else []
    return transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            *jitter,
            *eval_transform(image_size).transforms,
        ]
    )


def image_folder(data_dir: Path, split: str, transform: transforms.Compose | None) -> ImageFolder:
    """`<data_dir>/<split>/{all,hem}` as an ImageFolder whose class indices match CLASSES."""
    root = Path(data_dir) / split
    missing = [str(root / name) for name in CLASSES if not (root / name).is_dir()]
    if missing:
        raise BadInputError(missing, what=f"missing class folder(s) for split {split!r}")
    dataset = ImageFolder(str(root), transform=transform, allow_empty=True)
    if dataset.classes != list(CLASSES):
        extra = sorted(set(dataset.classes) - set(CLASSES))
        raise BadInputError(
            [str(root / name) for name in extra], what=f"unexpected class folder(s) in {root}"
        )
    empty = [str(root / name) for i, name in enumerate(CLASSES) if i not in dataset.targets]
    if empty:
        raise BadInputError(empty, what=f"class folder(s) without images in split {split!r}")
    return dataset


def dataset_fingerprint(dataset: ImageFolder) -> str:
    """Hash of relative paths, sizes and labels: a checkpoint is not resumed on other data."""
    root = Path(dataset.root)
    digest = hashlib.sha256()
    for path, label in dataset.samples:
        digest.update(
            f"{Path(path).relative_to(root)}|{Path(path).stat().st_size}|{label}\n".encode()
        )
    return digest.hexdigest()


def make_loader(
    dataset: ImageFolder,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    sampler: Sampler[int] | None = None,
    weights: Sequence[float] | None = None,
) -> DataLoader:
    """A DataLoader whose shuffling follows its own seeded generator (checkpointed on resume),
    or the given `sampler` (a DDP rank's shard). With `weights` (one per image) an epoch draws
    as many images with replacement, each with probability proportional to its weight, from
    the same generator. A shuffled (training) loader drops a last batch of one image: batch
    norm cannot train on it, and a DDP rank's half batch makes it likely."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    if weights is not None:
        if sampler is not None:
            raise ValueError("make_loader: pass `weights` or `sampler`, not both")
        sampler = WeightedRandomSampler(list(weights), len(weights), generator=generator)
    count = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        drop_last=shuffle and count > batch_size and count % batch_size == 1,
        num_workers=num_workers,
        generator=generator,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def check_images(images: Sequence[np.ndarray]) -> None:
    """Every model's predict input: RGB uint8 arrays (H, W, 3); lists every offender."""
    problems = [
        f"image {i}: expected RGB uint8 (H, W, 3), got "
        f"{getattr(im, 'dtype', type(im).__name__)} {getattr(im, 'shape', '')}"
        for i, im in enumerate(images)
        if not (
            isinstance(im, np.ndarray)
            and im.dtype == np.uint8
            and im.ndim == 3
            and im.shape[2] == 3
        )
    ]
    if problems:
        raise BadInputError(problems, what="cannot predict on these images")


def to_tensor_batch(images: Sequence[np.ndarray], image_size: int) -> torch.Tensor:
    """Stack RGB uint8 arrays through the eval transform (resizing any other size)."""
    check_images(images)
    transform = eval_transform(image_size)
    return torch.stack([transform(Image.fromarray(image)) for image in images])
