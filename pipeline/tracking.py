"""The one place MLflow is configured: store URI, experiments, run tags/params, models, registry.

Everything else calls these functions and never `mlflow.*` directly, so where a run lands, what
it is tagged with and how it ends are decided here alone.

- Store: `MLFLOW_TRACKING_URI` wins, then `tracking.uri`, else `sqlite:///<repo>/mlflow.db`
  with artifacts in `<repo>/mlartifacts` (anchored on the real repo even inside
  `dvc exp run --temp/--queue` copies, see `pipeline.config.tracking_home`); a direct
  database URI (`postgresql://...`, `mysql://...`) keeps its artifacts there too. The chosen
  URI is also exported to the environment, so libraries that read it themselves (Ultralytics'
  callback) log into the same store instead of creating `./mlruns` or `./mlflow.db`.
- One experiment per dataset, `<experiment_prefix>/<dataset>`, marked as a model-training
  experiment (MLflow 3 otherwise opens it on its GenAI overview). Runs are tagged with the git
  commit, DVC stage, DVC experiment name and baseline revision (when `dvc exp run` provides
  them; the experiment name is also in the run name), dataset name and hash, model name and
  the digest of the model folder they produced; they carry the whole resolved config as
  flattened params and the dataset they read as an MLflow dataset input.
- A run ends FINISHED, FAILED (exception) or KILLED (Ctrl-C / SIGTERM); a run orphaned by
  SIGKILL is closed as KILLED by `close_stale_runs` at the next attempt.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import socket
import subprocess
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import mlflow
import mlflow.data
import mlflow.pyfunc
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.types import Schema, TensorSpec
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import DictConfig, OmegaConf

from pipeline.config import MONITORS, REGISTER_METRICS, ConfigError, tracking_home
from pipeline.errors import PipelineError, sigterm_raises

if TYPE_CHECKING:  # pipeline.models imports torch/ultralytics: only when a model is loaded
    from pipeline.models.base import Classifier

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MODEL_ARTIFACT = "model"
MODEL_URI_TAG = "model_uri"
TEST_PREFIX = "test_"
SELECTED = "selected_"  # the kept checkpoint's validation scores
CHAMPION_ALIAS = "champion"
HTTP_TIMEOUT_S = 3.0
SEARCH_PAGE_SIZE = 1000  # runs per search call; `_search_runs` pages through them all
DATA_DIGEST_TAG = "dataset_hash"  # the prepared data's manifest digest a run trained on
PARENT_RUN_TAG = "mlflow.parentRunId"  # set on nested (child) runs, e.g. CV folds
SCHEMA_LOCK_TIMEOUT_S = 300
DIGEST_CHARS = 16  # MLflow keeps dataset digests short (its own are 8 characters)
PACKAGE = "all-detect"
MODEL_DIGEST_TAG = "model_digest"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# The process that holds a run open, so `close_stale_runs` closes only runs whose process died
HOST_TAG, PID_TAG = "host", "pid"
EXPERIMENT_KIND = "custom_model_development"  # the UI opens on the runs, not GenAI traces
DVC_EXPERIMENT_ENV = {
    "dvc_exp_name": "DVC_EXP_NAME",
    "dvc_exp_baseline_rev": "DVC_EXP_BASELINE_REV",
}


class TrackingUnavailableError(PipelineError, RuntimeError):
    """The MLflow store/server cannot be reached or written; the message names the URI."""


class NoChampionError(PipelineError, LookupError):
    """No run qualifies for the registry (e.g. a fresh store while DVC restored the models
    from its cache, so no training logged a run): the message names the experiment and store."""


def tracking_uri(cfg: DictConfig) -> str:
    """Where runs go: env `MLFLOW_TRACKING_URI`, else `tracking.uri`, else the repo's SQLite db.

    Relative SQLite paths are anchored on the real repository, not on the working directory,
    which is a throw-away copy under `dvc exp run --temp/--queue`.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.uri
    if not uri:
        return f"sqlite:///{tracking_home() / DEFAULT_DB}"
    db = _sqlite_path(uri)
    if db is not None and not db.is_absolute():
        return f"sqlite:///{tracking_home() / db}"
    return uri


def _sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifact folder for a new experiment: `<db folder>/mlartifacts/<experiment>` for SQLite,
    `<repo>/mlartifacts/<experiment>` for another database (`postgresql://`, `mysql://`, ...;
    `<repo>` is `pipeline.config.tracking_home`, the real repository).

    Without it MLflow would put a database store's artifacts under `./mlruns` of the current
    directory, a throw-away copy under `dvc exp run --temp/--queue`. Servers (http) decide
    their own artifact store, and a file store keeps them beside its runs: None.
    """
    db = _sqlite_path(uri)
    if db is not None:
        return (db.parent / ARTIFACTS_DIR / experiment).as_uri()
    if urlparse(uri).scheme.partition("+")[0] in DATABASE_ENGINES:  # postgresql+psycopg too
        return (tracking_home() / ARTIFACTS_DIR / experiment).as_uri()
    return None


def configure(cfg: DictConfig) -> str:
    """Point MLflow (and, via the environment, any library using it) at our store."""
    uri = tracking_uri(cfg)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    return uri


def check_reachable(cfg: DictConfig) -> str:
    """Fail fast, before training, when the store cannot be used; return its URI.

    A server gets a short-timeout HTTP probe (MLflow's own client retries for minutes). A
    SQLite store must have a writable folder; the probe query also creates the schema, so
    parallel jobs started afterwards do not race to migrate the database.
    """
    uri = configure(cfg)
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        _probe_http(uri)
        return uri
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingUnavailableError(
                f"MLflow store {uri}: cannot create folder: {exc}"
            ) from exc
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingUnavailableError(f"MLflow store {uri}: {db} is not writable")
        # Parallel stages (`dvc queue start -j N`) would race to create and migrate the
        # schema ("No such index ..."): the first one does it under a lock, the others wait.
        lock = _schema_lock(uri, db)
        try:
            with lock:
                _probe_store(uri)
        except Timeout:
            raise TrackingUnavailableError(
                f"MLflow store {uri}: another process has held {lock.lock_file} for "
                f"{SCHEMA_LOCK_TIMEOUT_S} s; if none is running, delete that file"
            ) from None
        return uri
    if urlparse(uri).scheme.partition("+")[0] in DATABASE_ENGINES:
        _probe_database(uri)
    _probe_store(uri)
    return uri


def _schema_lock(uri: str, db: Path) -> FileLock:
    """The lock beside the database, its file created first: filelock retries a file it
    cannot create (root on a read-only mount, where `os.access` says yes) until its timeout."""
    path = f"{db}.lock"
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        raise TrackingUnavailableError(
            f"MLflow store {uri}: cannot create its lock file {path}: {exc.strerror}"
        ) from None
    return FileLock(path, timeout=SCHEMA_LOCK_TIMEOUT_S)


def _probe_store(uri: str) -> None:
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingUnavailableError(f"MLflow store {uri} is not usable: {exc}") from exc


DEFAULT_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _probe_database(uri: str) -> None:
    """One short connection attempt to a database store (`postgresql://`, `mysql://`, ...):
    MLflow's own client retries an unusable database (not running, no such database, wrong
    password) for about two minutes, and waits on an unreachable host without a timeout."""
    import socket

    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        url = sqlalchemy.engine.make_url(uri)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends
        raise TrackingUnavailableError(f"MLflow store {uri} is not a database URI: {exc}") from None
    shown = url.render_as_string(hide_password=True)
    port = url.port or DEFAULT_DB_PORTS.get(url.get_backend_name())
    if url.host and port:  # a local socket (no host) answers or fails at once
        try:
            socket.create_connection((url.host, port), timeout=HTTP_TIMEOUT_S).close()
        except OSError as exc:
            raise TrackingUnavailableError(
                f"MLflow store {shown}: nothing answers at {url.host}:{port} ({exc}); start the "
                "database or unset MLFLOW_TRACKING_URI to use the local SQLite store"
            ) from None
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:  # a missing driver, database or role; a refused password
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrackingUnavailableError(f"MLflow store {shown} is not usable: {detail}") from None


def _probe_http(uri: str) -> None:
    """Reachable if `/health` (MLflow server) or the REST search endpoint answers 200."""
    base = uri.rstrip("/")
    last: Exception | None = None
    for endpoint in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        try:
            with urllib.request.urlopen(base + endpoint, timeout=HTTP_TIMEOUT_S):
                return
        except urllib.error.HTTPError as exc:  # server answered: try the next endpoint
            last = exc
        except (urllib.error.URLError, OSError) as exc:  # nothing answered: give up now
            last = exc
            break
    raise TrackingUnavailableError(
        f"MLflow tracking server {uri} is not reachable ({last}). Start it "
        "(`mlflow server --backend-store-uri sqlite:///mlflow.db`) or unset MLFLOW_TRACKING_URI "
        "to use the local SQLite store."
    )


def experiment_name(cfg: DictConfig, dataset: str) -> str:
    return f"{cfg.tracking.experiment_prefix}/{dataset}"


def registered_model_name(cfg: DictConfig, dataset: str) -> str:
    return f"{cfg.tracking.experiment_prefix}-{dataset}"


def _experiment_id(cfg: DictConfig, dataset: str) -> str:
    """Get or create (or restore, if deleted) the dataset's experiment, marked as a
    model-training experiment so the UI opens on its runs."""
    client = mlflow.MlflowClient()
    name = experiment_name(cfg, dataset)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_location(mlflow.get_tracking_uri(), name)
        try:
            experiment_id = client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
            return experiment_id
        except MlflowException:  # created meanwhile by a parallel job
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made by an older version
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def dvc_experiment() -> dict[str, str]:
    """The DVC experiment this stage runs in (`dvc exp run` exports its name and baseline
    revision to every stage), as run tags; empty under plain `dvc repro`."""
    found = {tag: os.environ.get(var) for tag, var in DVC_EXPERIMENT_ENV.items()}
    return {tag: value for tag, value in found.items() if value}


def display_name(name: str) -> str:
    """`<name> · <DVC experiment>`, so the runs of two experiments can be told apart."""
    experiment = dvc_experiment().get("dvc_exp_name")
    return f"{name} · {experiment}" if experiment else name


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit() -> str:
    """HEAD of the working directory's repo (a `dvc exp run --temp` copy is one), or 'unknown'."""
    return _git("rev-parse", "HEAD") or "unknown"


CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The processor's name: CPU training from one seed can differ between processor models
    (their vector kernels round differently), so a rerun's provenance must say which ran it."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The releases that decide a result's bits beside the code: a split, a resize, a CSV's floats
# or a CPU kernel can change between releases (constraints.txt pins the ones CI uses).
NUMERIC_LIBRARIES = (
    "numpy", "pandas", "scipy", "scikit-learn", "scikit-image", "opencv-python-headless",
    "torch", "torchvision", "ultralytics",
)  # fmt: skip


def library_versions() -> dict[str, str]:
    """The installed release of each NUMERIC_LIBRARIES package."""
    versions = {}
    for name in NUMERIC_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def code_and_machine() -> dict[str, object]:
    """Which code ran, where, under which releases: the fields every published result
    (snapshot, protocol, choose_upstream) records."""
    return {
        "git_revision": git_commit(),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
        },
        "libraries": library_versions(),
    }


def flatten_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    """`{'models': {'resnet50': {'lr': 1e-4}}}` -> `{'models.resnet50.lr': '0.0001'}`.

    Lists become JSON; values longer than MLflow's param limit are truncated with '...'.
    """
    tree = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
            return
        text = json.dumps(node) if isinstance(node, list | tuple) else str(node)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            text = text[: MAX_PARAM_VAL_LENGTH - 3] + "..."
        flat[prefix] = text

    walk("", tree)
    return flat


def _log_params(run_id: str, params: dict[str, str]) -> None:
    """Log params once; a resumed run keeps its original values (MLflow params are immutable)."""
    existing = mlflow.MlflowClient().get_run(run_id).data.params
    changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
    if changed:
        log.warning("resumed run %s keeps its original values for params %s", run_id, changed)
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})


@contextlib.contextmanager
def start_run(
    cfg: DictConfig,
    dataset: str,
    model: str,
    stage: str,
    run_id: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    dataset_hash: str | None = None,
    run_name: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Create (or resume, by `run_id`) a tagged run holding the whole config as params.

    `dataset_hash` (e.g. the manifest's sha256) identifies the data version. A resumed run
    gets the tags of its latest stage. Ends FINISHED, FAILED on an exception, KILLED on
    KeyboardInterrupt/SIGTERM (re-raised; SIGTERM becomes SystemExit(143) while the run is
    open, in the main thread only).
    """
    configure(cfg)
    experiment_id = _experiment_id(cfg, dataset)
    run = mlflow.start_run(
        run_id=run_id,
        experiment_id=experiment_id,
        run_name=None if run_id else display_name(run_name or model),
        nested=nested,
        parent_run_id=parent_run_id,
    )
    current = run.info.run_id
    restore_sigterm = sigterm_raises()
    status = RunStatus.FAILED
    try:
        commit = git_commit()
        tags = {
            "git_commit": commit,
            "mlflow.source.git.commit": commit,
            "dvc_stage": stage,
            "dataset": dataset,
            "model": model,
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(os.getpid()),
            **dvc_experiment(),
            **{f"library.{name}": version for name, version in library_versions().items()},
        }
        if dataset_hash is not None:  # a resumed run keeps the hash it was trained on
            tags[DATA_DIGEST_TAG] = dataset_hash
        mlflow.set_tags(tags)
        _log_params(current, flatten_config(cfg))
        yield run
        status = RunStatus.FINISHED
    except (KeyboardInterrupt, SystemExit):
        status = RunStatus.KILLED
        raise
    finally:
        restore_sigterm()
        active = mlflow.active_run()
        if active is not None and active.info.run_id == current:
            mlflow.end_run(RunStatus.to_string(status))
        else:  # the block ended or switched runs itself: close ours without touching others
            mlflow.MlflowClient().set_terminated(current, RunStatus.to_string(status))


def _search_runs(
    cfg: DictConfig, dataset: str, filter_string: str, order_by: list[str] | None = None
) -> list[Run]:
    """Every run of the dataset's experiment matching `filter_string`, page after page (one
    call returns at most a page: 1000 by default); none while the experiment does not exist."""
    configure(cfg)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name(cfg, dataset))
    if experiment is None:
        return []
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            filter_string=filter_string,
            order_by=order_by,
            max_results=SEARCH_PAGE_SIZE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def close_stale_runs(cfg: DictConfig, dataset: str, model: str) -> list[str]:
    """Mark this (dataset, model)'s runs left RUNNING by a dead (SIGKILLed) attempt as KILLED.

    Call at the start of training and CV. A run is stale when the process its tags name is
    gone: runs of a live process are left alone, as are other machines' runs (their next
    attempt closes them): `dvc queue start -j 2` trains the same model in two experiments at
    once, and CV shards train on several machines into one tracking server. A run without
    these tags (older code) counts as stale. Returns the closed run ids.
    """
    from pipeline.io import process_alive

    stale = _search_runs(cfg, dataset, f"attributes.status = 'RUNNING' and tags.model = '{model}'")
    ours = {run.info.run_id for run in [mlflow.active_run()] if run is not None}
    host = socket.gethostname()

    def dead(run: Run) -> bool:
        tags = run.data.tags
        if tags.get(HOST_TAG, host) != host:
            return False
        pid = tags.get(PID_TAG, "")
        return not (pid.isdigit() and process_alive(int(pid)))

    closed = [run.info.run_id for run in stale if run.info.run_id not in ours and dead(run)]
    for run_id in closed:
        mlflow.MlflowClient().set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
    if closed:
        log.warning("closed %d stale MLflow run(s) of %s/%s as KILLED", len(closed), dataset, model)
    return closed


def _active_run_id() -> str:
    """Refuse to log outside `start_run`: MLflow would silently open a run in the wrong place."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: log inside `pipeline.tracking.start_run(...)`")
    return run.info.run_id


def _numeric(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers (bools as 0/1) of `metrics`; None and text such as digests are left out."""
    return {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float | np.number)
    }


def log_epoch(metrics: Mapping[str, float | None], step: int) -> None:
    """Per-epoch training curves (train_loss, val_accuracy, ...) at `step` = epoch."""
    _active_run_id()
    mlflow.log_metrics(_numeric(metrics), step=step)


def log_test_metrics(metrics: Mapping[str, float | int | None]) -> None:
    """Test metrics as `test_<name>`; undefined ones (None) are skipped."""
    _active_run_id()
    mlflow.log_metrics(_numeric(metrics, TEST_PREFIX))


def set_tags(tags: Mapping[str, Any]) -> None:
    _active_run_id()
    mlflow.set_tags({key: str(value) for key, value in tags.items()})


def log_dataset(frame: pd.DataFrame, name: str, source: str, digest: str, context: str) -> None:
    """The images a run read, as an MLflow dataset input: name, digest (e.g. the manifest's
    sha256) and source (the dataset root) fill the runs table's Dataset column, and the
    rows (id, label, group, split) let a reader see which cells were used for what."""
    _active_run_id()
    columns = [c for c in ("id", "label", "group", "split") if c in frame.columns]
    with warnings.catch_warnings():  # a local path: MLflow's two local source kinds are alike
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        dataset = mlflow.data.from_pandas(
            frame[columns].reset_index(drop=True),
            source=str(source),
            name=name,
            digest=digest[:DIGEST_CHARS],
            targets="label",
        )
    mlflow.log_input(dataset, context=context)


TIMED_STAGES = ("train", "evaluate")  # stages that share a run and log `<stage>_seconds`


def log_durations(seconds: Mapping[str, float]) -> None:
    """Stage durations as `<stage>_seconds` metrics: a resumed run's wall time spans several
    stages (train, then evaluate minutes later), so the UI's Duration says little."""
    _active_run_id()
    mlflow.log_metrics({f"{stage}_seconds": float(value) for stage, value in seconds.items()})


def log_committed_test_metrics(
    metrics_path: Path, model_digest: str, data_digest: str, plots_dir: Path | None = None
) -> bool:
    """Log the test metrics of `metrics_path` (an evaluate output) into the active run when they
    were measured on this very model and data (same digests), and tag where they came from;
    with them the files of `plots_dir` (the same evaluate's plot data and predictions), which
    evaluate would otherwise have logged into a run of that model.

    Why: DVC skips `evaluate` when a retrained model comes out byte-identical to the locked one
    (deterministic models on a fresh clone), which keeps dvc.lock unchanged but would leave the
    new training run without test metrics. Returns whether metrics were logged."""
    _active_run_id()
    if not metrics_path.is_file():
        return False
    from pipeline.io import MalformedFileError, read_json_object

    try:
        metrics = read_json_object(metrics_path, "a JSON object of metrics")
    except MalformedFileError as exc:  # the model is saved: an old report file must not fail it
        log.warning("%s; its test metrics are not reused", exc)
        return False
    if (metrics.get("model_digest"), metrics.get("data_digest")) != (model_digest, data_digest):
        return False
    log_test_metrics(metrics)
    set_tags({"test_metrics_from": f"{metrics_path} (evaluate output of this model digest)"})
    if plots_dir is not None and plots_dir.is_dir():
        log_artifacts(sorted(p for p in plots_dir.iterdir() if p.is_file()))
    return True


def stage_wall_minutes(cfg: DictConfig, dataset: str, stages: Iterable[str]) -> dict[str, float]:
    """Wall time in minutes of each DVC stage that logged a run (e.g. `cv@yolov8`): what a
    published run took, read from where it was logged.

    `train@<model>` and `evaluate@<model>` share one run (evaluate resumes the training's,
    which then carries evaluate's tag and spans both stages and whatever ran between them),
    so they are read from the `<kind>_seconds` metric each logged (`log_durations`); any
    other stage is the newest finished top-level run tagged with it, end minus start.
    """
    minutes = {}
    for stage in stages:
        kind, _, model = stage.partition("@")
        timed = bool(model) and kind in TIMED_STAGES
        if timed:
            query = f"tags.model = '{model}' and metrics.{kind}_seconds >= 0"
        else:
            query = f"tags.dvc_stage = '{stage}'"
        runs = _search_runs(
            cfg,
            dataset,
            f"{query} and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
        )
        top = [r for r in runs if PARENT_RUN_TAG not in r.data.tags]
        if not top:
            continue
        if timed:
            minutes[stage] = round(top[0].data.metrics[f"{kind}_seconds"] / 60, 2)
        else:
            run = top[0].info
            minutes[stage] = round((run.end_time - run.start_time) / 60_000, 2)
    return minutes


def find_run(cfg: DictConfig, dataset: str, tags: Mapping[str, str]) -> str | None:
    """The newest finished or running run of the dataset's experiment carrying all `tags`,
    preferring one of the current DVC experiment; None when the store has none."""
    clauses = [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
    runs = _search_runs(
        cfg, dataset, " and ".join(clauses), order_by=["attributes.start_time DESC"]
    )
    if not runs:
        return None
    current = dvc_experiment().get("dvc_exp_name")
    same = [r for r in runs if current and r.data.tags.get("dvc_exp_name") == current]
    return (same or runs)[0].info.run_id


def log_cv_summary(summary: Mapping[str, Any]) -> None:
    """A CV summary: validation-part scores as `val_*` (what tuning selects on), the rest as
    test metrics (`test_accuracy_mean`, ...)."""
    _active_run_id()
    numeric = {
        k: v
        for k, v in summary.items()
        if (isinstance(v, int | float) and not isinstance(v, bool)) or v is None
    }
    mlflow.log_metrics(_numeric({k: v for k, v in numeric.items() if k.startswith("val_")}))
    log_test_metrics({k: v for k, v in numeric.items() if not k.startswith("val_")})


def log_artifacts(paths: Iterable[Path | str], artifact_path: str | None = None) -> None:
    """Files go in `artifact_path`, folders in `artifact_path/<folder name>`."""
    _active_run_id()
    for path in map(Path, paths):
        if path.is_dir():
            subdir = f"{artifact_path}/{path.name}" if artifact_path else path.name
            mlflow.log_artifacts(str(path), artifact_path=subdir)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
        else:
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or folder")


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper: loads a saved model folder; predict(N x H x W x 3 uint8) -> P(ALL).

    Inputs must be preprocessed (segmented, cropped) like the training images. Loading needs
    the `pipeline` package importable (it is pickled by reference, not by value).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from pipeline.models.base import load_model

        self.classifier = load_model(context.artifacts["model_dir"])

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        return self.classifier.predict_proba(list(model_input))


def _requirements() -> list[str]:
    """The project's declared runtime dependencies: explicit, so MLflow infers/downloads nothing."""
    try:
        requires = importlib.metadata.requires(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    return [r for r in requires if "extra ==" not in r] or [f"mlflow=={mlflow.__version__}"]


SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
    outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))]),
)


def log_model(classifier: Classifier, model_dir: Path | str) -> ModelInfo:
    """Log the saved model folder as a pyfunc model of the active run; tag the run with its URI.

    One wrapper for every classifier (no per-model flavour), so serving and the registry
    never branch on the model kind.
    """
    run_id = _active_run_id()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"cannot log model: {model_dir} is not a saved model folder")
    with warnings.catch_warnings():
        # An input example would make MLflow load and run the model once more at logging time.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=ClassifierModel(),
            artifacts={"model_dir": str(model_dir)},
            pip_requirements=_requirements(),
            signature=SIGNATURE,
            metadata={"kind": classifier.kind, "image_size": classifier.image_size},
        )
    mlflow.MlflowClient().set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    return info


def log_selected_epoch(row: Mapping[str, float | None]) -> None:
    """The kept checkpoint's validation scores as `selected_<name>`: what `register_best` ranks
    on (never a test score)."""
    _active_run_id()
    mlflow.log_metrics(_numeric({k: v for k, v in row.items() if k.startswith("val_")}, SELECTED))


def download_model(cfg: DictConfig, uri: str, target: Path) -> Path:
    """A registry model (`models:/<name>/<version|alias>`) fetched from the store into the
    folder `target` (the caller's to delete); returns where it landed."""
    configure(cfg)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    except MlflowException as exc:
        try:
            names = sorted(m.name for m in mlflow.MlflowClient().search_registered_models())
        except MlflowException:
            names = ["(the registry cannot be listed)"]
        raise PipelineError(
            f"{uri}: cannot be fetched from the model registry at {mlflow.get_tracking_uri()}: "
            f"{exc.message} (registered models: {names or 'none'}; the report stage registers "
            "<prefix>-<dataset> with the alias 'champion', but `dvc repro` skips it when no "
            "metric changed, e.g. on a fresh clone whose retrained models came out "
            "byte-identical: `python -m pipeline.stages.report` registers it)"
        ) from None


def _better(metric: str) -> Any:
    """`max` or `min`: how `val_<metric>` ranks (`pipeline.config.MONITORS`, the rule that also
    picks a training's best epoch), so a loss is never ranked like an accuracy."""
    monitor = MONITORS.get(f"val_{metric}")
    if monitor is None:
        raise ConfigError(
            f"tracking.register_metric: {metric!r} has no known better direction; use one of "
            f"{list(REGISTER_METRICS)}"
        )
    return monitor


def _finite(value: float | None) -> float:
    """`value`, or +inf when it is missing or NaN: a tie-break never prefers an unknown loss."""
    return math.inf if value is None or math.isnan(value) else value


def register_best(
    cfg: DictConfig, dataset: str, metric: str = "accuracy", data_digest: str | None = None
) -> int:
    """Register the finished run whose kept checkpoint scored best on the **validation** split
    (`selected_val_<metric>`, highest or lowest as `pipeline.config.MONITORS` says; ties to the
    lower `selected_val_loss`, then the newest run) as `<prefix>-<dataset>` with the alias
    'champion'.

    `data_digest` (the prepared manifest's sha256, as `start_run` tagged it) restricts the
    candidates to runs trained on that data: scores from another split (an image-level one
    leaks cells) or data version are not comparable. Test metrics never choose: the test split
    is for reporting. Idempotent: if that run is already a version, its number is returned.
    The version and the run are tagged with why; NoChampionError when no run qualifies.
    """
    better = _better(metric)
    key = f"{SELECTED}val_{metric}"
    loss = f"{SELECTED}val_loss"
    # Every page is read: CV fold runs (children) log selected scores but no model, and
    # thousands of them would crowd the candidates out of a first page.
    query = "attributes.status = 'FINISHED'"
    if data_digest is not None:
        query += f" and tags.`{DATA_DIGEST_TAG}` = '{data_digest}'"
    within = (
        f"within data digest {data_digest}"
        if data_digest is not None
        else "across every data version (no data digest given)"
    )
    runs = _search_runs(cfg, dataset, query)
    client = mlflow.MlflowClient()
    candidates = [  # filtered here: `IS NULL` on tags needs a recent MLflow server
        r
        for r in runs
        if MODEL_URI_TAG in r.data.tags
        and PARENT_RUN_TAG not in r.data.tags
        and not math.isnan(r.data.metrics.get(key, math.nan))
    ]
    if not candidates:
        raise NoChampionError(
            f"no finished run with a model to register for {dataset} {within}: none in "
            f"experiment {experiment_name(cfg, dataset)!r} at {mlflow.get_tracking_uri()} has "
            f"{key!r} and a logged model (models restored from the DVC cache log no run: "
            "`dvc repro --force train@<model>` trains and logs one)"
        )
    candidates.sort(key=lambda r: -r.info.start_time)  # newest first: it wins a full tie
    top = better(r.data.metrics[key] for r in candidates)
    tied = [r for r in candidates if r.data.metrics[key] == top]
    best = min(tied, key=lambda r: _finite(r.data.metrics.get(loss)))
    reason = (
        f"{'highest' if better is max else 'lowest'} {key} = {top:.4f} of {len(candidates)} "
        f"finished runs with a model {within} (ties: lower {loss}, then newest); test metrics "
        "never choose"
    )
    name = registered_model_name(cfg, dataset)
    registered = [
        v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == best.info.run_id
    ]
    version = (
        registered[0]
        if registered
        else mlflow.register_model(
            best.data.tags[MODEL_URI_TAG],
            name,
            tags={
                key: str(top),
                "model": best.data.tags.get("model", ""),
                DATA_DIGEST_TAG: best.data.tags.get(DATA_DIGEST_TAG, ""),
                "selection": reason,
            },
        )
    )
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    client.set_tag(best.info.run_id, "champion_reason", reason)
    return int(version.version)
