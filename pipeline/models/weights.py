"""Pretrained weights, found offline first; never a silent fallback to random init.

Where each file is looked for:
- torchvision (ResNet50, DenseNet121): torch's own hub cache,
  `torch.hub.get_dir()/checkpoints/<file name of the Weights enum URL>` (honours TORCH_HOME).
- Ultralytics YOLO: `<variant>.pt` in `$ALL_DETECT_WEIGHTS`, default `~/.cache/all-detect`
  (our own folder rather than Ultralytics' `weights_dir` setting, which is a per-user global
  that defaults to a path inside whatever directory Ultralytics was first imported from).

A missing file is downloaded only when the host answers; otherwise `MissingWeightsError` says
which file to fetch, from where, and where to put it. A file that is there but cannot be
loaded (a cut download, another network's weights) is an `UnreadableWeightsError` naming it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torchvision.models import WeightsEnum

from pipeline.errors import PipelineError

YOLO_RELEASE_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0"


class MissingWeightsError(PipelineError, FileNotFoundError):
    """Pretrained weights are not on disk and cannot be downloaded."""

    def __init__(self, file_name: str, directory: Path, url: str) -> None:
        self.file_name, self.directory, self.url = file_name, Path(directory), url
        super().__init__(
            f"pretrained weights {file_name!r} not found in {self.directory} and the network is "
            f"unreachable. Download {url} and save it as {self.directory / file_name} "
            f"(or set `pretrained: none` to train from random initialisation)."
        )


class UnreadableWeightsError(PipelineError, ValueError):
    """Pretrained weights are on disk but cannot be loaded."""

    def __init__(self, path: Path, url: str, cause: BaseException) -> None:
        lines = str(cause).strip().splitlines()
        reason = f"{type(cause).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")
        super().__init__(
            f"pretrained weights {path} cannot be loaded ({reason}): a cut download or another "
            f"file. Delete it and download {url} to {path} again (or set `pretrained: none` to "
            "train from random initialisation)."
        )


def network_available(url: str, timeout: float = 3.0) -> bool:
    """True when `url`'s host accepts a TCP connection (no request is sent)."""
    host = urlparse(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def torchvision_weights(arch: str) -> WeightsEnum:
    """torchvision's recommended ImageNet weights for `arch`, present in the hub cache.

    Returns the enum (ready for `torchvision.models.get_model(arch, weights=...)`, which then
    reads the cached file) after making sure the file exists, downloading it if possible.
    """
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = torchvision_weights_path(weights)
    directory, file_name = path.parent, path.name
    if not path.is_file():
        if not network_available(weights.url):
            raise MissingWeightsError(file_name, directory, weights.url)
        directory.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(directory / file_name))
    return weights


def torchvision_weights_path(weights: WeightsEnum) -> Path:
    """Where torch's hub cache keeps the file of `weights`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def pretrained_torchvision(arch: str) -> torch.nn.Module:
    """torchvision's `arch` with its ImageNet weights (`torchvision_weights`), a cached file
    that does not load being an `UnreadableWeightsError` rather than torch's traceback."""
    weights = torchvision_weights(arch)
    try:
        return torchvision.models.get_model(arch, weights=weights)
    except Exception as exc:  # pickle, zip and state-dict errors, each its own type
        raise UnreadableWeightsError(torchvision_weights_path(weights), weights.url, exc) from exc


def yolo_weights_dir() -> Path:
    return Path(os.environ.get("ALL_DETECT_WEIGHTS") or Path.home() / ".cache" / "all-detect")


def yolo_weights(variant: str) -> Path:
    """Path to the official `<variant>.pt` classification weights (downloaded if reachable)."""
    directory = yolo_weights_dir()
    file_name = f"{variant}.pt"
    path = directory / file_name
    if not path.is_file():
        url = yolo_weights_url(variant)
        if not network_available(url):
            raise MissingWeightsError(file_name, directory, url)
        directory.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path))
    return path


def yolo_weights_url(variant: str) -> str:
    return f"{YOLO_RELEASE_URL}/{variant}.pt"
