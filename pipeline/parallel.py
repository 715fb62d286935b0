"""Per-image work on all cores with one progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from joblib import Parallel, delayed
from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


def n_jobs() -> int:
    """All cores unless ALL_DETECT_JOBS says otherwise (benchmarks compare 1 vs all)."""
    return int(os.environ.get("ALL_DETECT_JOBS", "0")) or os.cpu_count() or 1


class _InDirectory:
    """Call `func` in the caller's working directory: joblib reuses worker processes, which
    keep the directory they started in, so relative paths would resolve somewhere else."""

    def __init__(self, func: Callable[[T], R], cwd: str) -> None:
        self.func, self.cwd = func, cwd

    def __call__(self, item: T) -> R:
        if os.getcwd() != self.cwd:
            os.chdir(self.cwd)
        return self.func(item)


def parallel_map(
    func: Callable[[T], R], items: Sequence[T] | Iterable[T], desc: str, jobs: int | None = None
) -> list[R]:
    """Map `func` over `items` in worker processes; results keep the input order."""
    items = list(items)
    jobs = jobs or n_jobs()
    results = []
    with tqdm(total=len(items), desc=desc, unit="img", mininterval=0.5) as progress:
        if jobs == 1 or len(items) < 8:
            for item in items:
                results.append(func(item))
                progress.update()
        else:
            runner = Parallel(n_jobs=jobs, return_as="generator", batch_size=8)
            task = _InDirectory(func, os.getcwd())
            for result in runner(delayed(task)(item) for item in items):
                results.append(result)
                progress.update()
    return results
