"""DistributedDataParallel for the torchvision models: one process per GPU (NCCL), or per CPU
worker with `train.strategy: ddp` (gloo), in place of `torch.nn.DataParallel`.

The stage's own process is rank 0: it keeps the tracking callback, writes checkpoints and
outputs, and ends with the trained model, so the train stage and `dvc repro` do not change.
The other ranks are spawned processes that run the same training function on their shard of
every batch (`DistributedSampler`) and exit when it ends. Losses and accuracies are summed
across ranks, so every rank (and the history) sees the whole epoch's figures.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.config import STRATEGIES, ConfigError
from pipeline.train.device import DeviceSpec

MASTER = "127.0.0.1"


def world_size(strategy: str, processes: int, device: DeviceSpec) -> int:
    """How many processes train: one per listed GPU, `processes` CPU workers with `ddp` on the
    CPU, else one (plain single-process training, bit for bit as before)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"train.strategy: {strategy!r} not in {STRATEGIES}")
    if device.device.type == "cuda" and device.multi_gpu:
        return len(device.device_ids)
    if strategy == "ddp" and device.device.type == "cpu":
        if processes < 1:
            raise ConfigError(f"train.processes: {processes} must be >= 1 with strategy ddp")
        return processes
    return 1


def rank_device(device: DeviceSpec, rank: int) -> DeviceSpec:
    """The device of one rank: its own GPU, or the CPU."""
    if device.device.type != "cuda":
        return device
    index = device.device_ids[rank]
    return DeviceSpec(torch.device("cuda", index), (index,))


class ShardSampler(torch.utils.data.Sampler[int]):
    """Every `world`-th index from `rank`, without the padding of DistributedSampler: each image
    is evaluated exactly once across the ranks."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def launch(
    train: Callable[..., Any],
    world: int,
    backend: str,
    args: tuple[Any, ...],
    main_args: tuple[Any, ...] = (),
) -> Any:
    """Run `train(rank, world, *args)` on `world` ranks, rank 0 in this process with
    `*main_args` appended (what must not or cannot travel: a tracking callback); return rank
    0's result. Ranks 1.. are spawned (their arguments must pickle); a failing rank fails the
    launch.
    """
    port = _free_port()
    context = mp.get_context("spawn")
    others = [
        context.Process(
            target=_run_rank, args=(train, rank, world, port, backend, *args), daemon=True
        )
        for rank in range(1, world)
    ]
    for process in others:
        process.start()
    try:
        result = _run_rank(train, 0, world, port, backend, *args, *main_args)
    finally:
        for process in others:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    failed = [p.exitcode for p in others if p.exitcode not in (0, None)]
    if failed:
        raise RuntimeError(f"DDP rank(s) ended with exit codes {failed}")
    return result


def backend_for(device: DeviceSpec) -> str:
    return "nccl" if device.device.type == "cuda" else "gloo"


def _run_rank(
    train: Callable[..., Any], rank: int, world: int, port: int, backend: str, *args: Any
) -> Any:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = MASTER, str(port)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        return train(rank, world, *args)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((MASTER, 0))
        return probe.getsockname()[1]


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """Rank 0, or a single-process run: the one that writes files and talks to MLflow."""
    return not active() or dist.get_rank() == 0


def sum_across(*values: float) -> list[float]:
    """Each value summed over the ranks (itself when not distributed)."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank ([value] when not distributed)."""
    if not active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if active():
        dist.barrier()
