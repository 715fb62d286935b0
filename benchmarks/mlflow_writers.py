"""How many pipeline stages can write to one MLflow store at once before runs are lost:
`python -m benchmarks.mlflow_writers [--uri URI] [--writers 1 2 4 8 16]`.

Each writer is its own process and does what one `train` stage does to the store: one run,
its params, one metric batch per epoch, a tag, end. All writers of a round start together
(a barrier). Default store: a fresh SQLite file (the pipeline's default, `mlflow.db`);
`--uri http://...` measures a tracking server (e.g. on PostgreSQL, docs/scaling.md).
Writes `benchmarks/results/mlflow_writers.json` (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "mlflow_writers.json"
EXPERIMENT = "writers-benchmark"
PARAMS = 60  # about what a train stage logs (the resolved config, flattened)
METRICS_PER_EPOCH = 6


def _write_one_run(uri: str, round_id: str, index: int, epochs: int, barrier, results) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    barrier.wait()
    start = time.perf_counter()
    try:
        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run(run_name=f"{round_id}-{index}"):
            mlflow.set_tag("round", round_id)
            mlflow.log_params({f"param_{i}": i for i in range(PARAMS)})
            for epoch in range(1, epochs + 1):
                mlflow.log_metrics(
                    {f"metric_{i}": epoch * 0.1 + i for i in range(METRICS_PER_EPOCH)}, step=epoch
                )
        results.put((index, None, time.perf_counter() - start))
    except Exception as exc:  # the failure itself is what is measured
        results.put((index, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}", None))


def measure(uri: str, writers: int, epochs: int) -> dict[str, Any]:
    """One round of `writers` simultaneous runs; how many arrived complete."""
    import mlflow

    context = mp.get_context("spawn")
    barrier, results = context.Barrier(writers), context.Queue()
    round_id = f"w{writers}-{os.getpid()}-{time.time_ns()}"
    processes = [
        context.Process(target=_write_one_run, args=(uri, round_id, i, epochs, barrier, results))
        for i in range(writers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    errors = sorted({error for _, error, _ in outcomes if error})
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.round = '{round_id}'"
    )
    complete = [
        r
        for r in runs
        if r.info.status == "FINISHED"
        and len(r.data.params) == PARAMS
        and len(r.data.metrics) == METRICS_PER_EPOCH
    ]
    seconds = sorted(s for _, _, s in outcomes if s is not None)
    return {
        "writers": writers,
        "failed_writers": sum(1 for _, error, _ in outcomes if error),
        "complete_runs": len(complete),
        "errors": errors,
        "median_run_seconds": round(statistics.median(seconds), 2) if seconds else None,
        "max_run_seconds": round(seconds[-1], 2) if seconds else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="tracking URI (default: a fresh SQLite file)")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--epochs", type=int, default=20, help="metric batches per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import mlflow

    from pipeline.io import atomic_write_json

    with tempfile.TemporaryDirectory() as scratch:
        uri = args.uri or f"sqlite:///{Path(scratch) / 'mlflow.db'}"
        client = mlflow.MlflowClient(uri)  # schema and experiment created once, as the pipeline
        if client.get_experiment_by_name(EXPERIMENT) is None:  # does before training
            client.create_experiment(EXPERIMENT)
        rounds = [measure(uri, n, args.epochs) for n in args.writers]
    backend = "sqlite (fresh file)" if not args.uri else args.uri
    result = {
        "backend": backend,
        "epochs_per_run": args.epochs,
        "params_per_run": PARAMS,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "mlflow": mlflow.__version__,
        "rounds": rounds,
    }
    atomic_write_json(args.out, result)
    print(f"| writers | failed | complete runs | median s | max s |  ({backend})")
    print("|---:|---:|---:|---:|---:|")
    for r in rounds:
        print(
            f"| {r['writers']} | {r['failed_writers']} | {r['complete_runs']} "
            f"| {r['median_run_seconds']} | {r['max_run_seconds']} |"
        )
    for r in rounds:
        for error in r["errors"]:
            print(f"{r['writers']} writers: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
