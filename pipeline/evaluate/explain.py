"""Grad-CAM heatmaps for the CNN models: where in the cell the evidence for ALL lies.

Any model whose `cam_target()` is not None can be explained (ResNet50, DenseNet121, the
hybrid's fine-tuned ResNet50, YOLOv8-cls); HOG+SVM has no feature map to explain.

Choices:
- Target class: always ALL (the positive class), not the predicted one, so every heatmap
  answers the same question ("what pushes this cell towards ALL?") and heatmaps of ALL and
  hem cells are comparable. A hem cell with no ALL evidence gets an all-zero map.
- Each heatmap is min-max scaled on its own (pytorch_grad_cam's default): it shows *where*
  the evidence is, not how strong it is compared with other cells.
- The tensors are the model's own preprocessing (`CamTarget.to_tensor`), i.e. exactly what
  `predict_proba` sees; heatmaps are resized back to the input image size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from pipeline.io import write_image
from pipeline.models.base import CamTarget, Classifier
from pipeline.train.data import check_images

BATCH_SIZE = 16  # bounds the memory of the retained autograd graph


def require_cam_target(model: Classifier) -> CamTarget:
    """The model's Grad-CAM target, or a ValueError naming the model that has none."""
    target = model.cam_target()
    if target is None:
        name = model.config.get("name", model.kind)
        raise ValueError(
            f"model {name!r} (kind {model.kind!r}) has no single convolutional feature map to "
            "explain; Grad-CAM needs a CNN model (for an ensemble, explain its members' own "
            "models: trained alike, they have the same weights)"
        )
    return target


def heatmaps(model: Classifier, images: Sequence[np.ndarray]) -> np.ndarray:
    """Grad-CAM of class ALL for same-sized RGB uint8 images: (N, H, W) floats in [0, 1]."""
    check_images(images)
    sizes = sorted({image.shape[:2] for image in images})
    if len(sizes) > 1:
        raise ValueError(f"images must share one size to stack heatmaps, got sizes {sizes}")
    target = require_cam_target(model)
    if not images:
        return np.zeros((0, 0, 0), np.float32)
    height, width = sizes[0]
    maps = []
    # Gradients are needed even if the caller runs under no_grad/inference_mode; the input
    # requires grad so that frozen layers (`trainable: head`) still pass gradients through.
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        GradCAM(model=target.network, target_layers=target.layers) as cam,
    ):
        for start in range(0, len(images), BATCH_SIZE):
            batch = target.to_tensor(images[start : start + BATCH_SIZE]).requires_grad_(True)
            classes = [ClassifierOutputTarget(target.positive_index)] * len(batch)
            for small in cam(input_tensor=batch, targets=classes):
                resized = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
                maps.append(np.clip(resized, 0.0, 1.0))
    return np.stack(maps).astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The heatmap (jet colour map) blended half-and-half over the RGB uint8 image."""
    check_images([image])
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} != image size {image.shape[:2]}")
    return show_cam_on_image(image.astype(np.float32) / 255.0, heatmap, use_rgb=True)


def write_overlays(
    model: Classifier, images: Sequence[np.ndarray], names: Sequence[str], out_dir: Path | str
) -> list[Path]:
    """Write `<out_dir>/<name>.png` = image | overlay, side by side, for each image.

    Names may contain `/` (subfolders are created); they must be unique.
    """
    if len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate overlay names: {duplicates}")
    maps = heatmaps(model, images)
    out_dir = Path(out_dir)
    written = []
    for image, heatmap, name in zip(images, maps, names, strict=True):
        path = out_dir / f"{name}.png"
        write_image(path, np.hstack([image, overlay(image, heatmap)]))
        written.append(path)
    return written
