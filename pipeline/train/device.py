"""One place that turns the `train.device` string into torch devices (and Ultralytics' form)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from pipeline.config import ConfigError, parse_device


@dataclass(frozen=True)
class DeviceSpec:
    """Where to train: the primary device, GPU ids to spread a batch over, Ultralytics' string."""

    device: torch.device
    device_ids: tuple[int, ...] = ()  # more than one id: DistributedDataParallel, one rank each

    @property
    def multi_gpu(self) -> bool:
        """More than one GPU id: train with one DistributedDataParallel rank per GPU."""
        return len(self.device_ids) > 1

    @property
    def ultralytics(self) -> str:
        """Ultralytics takes 'cpu', 'mps', '0' or '0,1' rather than torch devices."""
        if self.device.type == "cuda":
            return ",".join(str(i) for i in self.device_ids)
        return self.device.type


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(spec: str | int = "auto") -> DeviceSpec:
    """Resolve 'auto' | 'cpu' | 'mps' | 'cuda' | 'cuda:N' | 'N' | 'N,M,...' to a DeviceSpec.

    'auto' prefers CUDA, then Apple MPS, then CPU. Asking for a GPU that is not there is an
    error rather than a silent CPU fallback, so a run never reports CPU timings as GPU ones.
    """
    kind, ids = parse_device(spec)
    if kind == "auto":
        if torch.cuda.is_available():
            return DeviceSpec(torch.device("cuda", 0), (0,))
        if _mps_available():
            return DeviceSpec(torch.device("mps"))
        return DeviceSpec(torch.device("cpu"))
    if kind == "cpu":
        return DeviceSpec(torch.device("cpu"))
    if kind == "mps":
        if not _mps_available():
            raise ConfigError("train.device='mps' but Apple MPS is not available")
        return DeviceSpec(torch.device("mps"))
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [i for i in ids if i >= available]
    if missing:
        raise ConfigError(
            f"train.device={spec!r}: CUDA device(s) {missing} not available "
            f"({available} CUDA device(s) visible)"
        )
    return DeviceSpec(torch.device("cuda", ids[0]), ids)


def pin_threads(threads: int | None) -> int:
    """Fix torch's (and Ultralytics') CPU thread count when `threads` is set; return the count
    in use. From-scratch results depend on it through the order of float sums, so a pinned
    count lets a machine with more cores reproduce the committed metrics. Ultralytics resets
    torch to its own `NUM_THREADS` (cores - 1) whenever it selects a device: that is pinned too.
    """
    if threads:
        torch.set_num_threads(int(threads))
        torch_utils = sys.modules.get("ultralytics.utils.torch_utils")
        if torch_utils is not None:
            torch_utils.NUM_THREADS = int(threads)
        global _PINNED
        _PINNED = int(threads)
    return torch.get_num_threads()


def pinned_threads() -> int | None:
    """The count `pin_threads` set in this process, if any (read when Ultralytics loads)."""
    return _PINNED


_PINNED: int | None = None
