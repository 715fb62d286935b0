import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline import tracking
from pipeline.errors import PipelineError
from pipeline.models.base import Classifier

DATASET, MODEL = "synthetic", "svm_hog"


class MeanIntensity(Classifier):
    """A real (if trivial) classifier: P(ALL) = mean intensity, scaled by a saved factor."""

    kind = "test_mean_intensity"

    def _fit(self, ctx):
        return []

    def predict_proba(self, images):
        return np.array([float(im.mean()) / 255 * self.config["scale"] for im in images])

    def _save_weights(self, directory: Path) -> None:
        (directory / "weights.json").write_text(json.dumps({"scale": self.config["scale"]}))

    def _load_weights(self, directory: Path) -> None:
        self.config["scale"] = json.loads((directory / "weights.json").read_text())["scale"]


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory):
    """Creating MLflow's schema takes seconds: do it once, copy the file for each test."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture(autouse=True)
def _fresh_store(migrated_db, tmp_path, monkeypatch):
    """A fresh store per test; run from an empty folder to catch a stray ./mlruns."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(migrated_db, store / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    yield
    while mlflow.active_run():
        mlflow.end_run()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def client():
    return mlflow.MlflowClient(mlflow.get_tracking_uri())


def status(run_id):
    return client().get_run(run_id).info.status


def test_tracking_uri_precedence(cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    cfg.tracking.uri = "sqlite:////srv/mlflow.db"
    assert tracking.tracking_uri(cfg) == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(cfg) == "sqlite:////srv/mlflow.db"
    repo = Path(tracking.tracking_home())
    cfg.tracking.uri = "sqlite:///stores/mlflow.db"  # relative: anchored on the repo, not cwd
    assert tracking.tracking_uri(cfg) == f"sqlite:///{repo / 'stores' / 'mlflow.db'}"
    cfg.tracking.uri = None
    assert tracking.tracking_uri(cfg) == f"sqlite:///{repo / 'mlflow.db'}"


def test_default_store_is_anchored_on_repo_from_dvc_temp_copy(cfg, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "dvc.yaml").parent.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    temp_copy = repo / ".dvc" / "tmp" / "exps" / "xyz"
    temp_copy.mkdir(parents=True)
    (temp_copy / "dvc.yaml").write_text("stages: {}\n")  # the copy looks like a repo too
    monkeypatch.chdir(temp_copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    uri = tracking.tracking_uri(cfg)
    assert uri == f"sqlite:///{repo.resolve() / 'mlflow.db'}"
    location = tracking.artifact_location(uri, "all-detect/cnmc")
    assert location == (repo.resolve() / "mlartifacts" / "all-detect" / "cnmc").as_uri()


def dvc_temp_copy(tmp_path, monkeypatch):
    """Work inside `<repo>/.dvc/tmp/exps/xyz`, as `dvc exp run --temp` does; returns <repo>."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    temp_copy = repo / ".dvc" / "tmp" / "exps" / "xyz"
    temp_copy.mkdir(parents=True)
    (temp_copy / "dvc.yaml").write_text("stages: {}\n")  # the copy looks like a repo too
    monkeypatch.chdir(temp_copy)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return repo.resolve()


@pytest.mark.parametrize(
    "uri",
    ["postgresql://u@db:5432/mlflow", "postgresql+psycopg://u@db/mlflow", "mysql://u@db/mlflow"],
)
def test_a_database_store_keeps_its_artifacts_in_the_repo_not_in_a_temp_copy(
    tmp_path, monkeypatch, uri
):
    repo = dvc_temp_copy(tmp_path, monkeypatch)
    location = tracking.artifact_location(uri, "all-detect/cnmc")
    assert location == (repo / "mlartifacts" / "all-detect" / "cnmc").as_uri()
    assert tracking.artifact_location("http://server:5000", "all-detect/cnmc") is None


def test_run_has_params_tags_metrics(cfg, tmp_path):
    with tracking.start_run(cfg, DATASET, MODEL, "train", dataset_hash="abc123") as run:
        tracking.log_epoch({"train_loss": 0.5, "val_accuracy": 0.75, "val_auc": None}, step=1)
        tracking.log_epoch({"train_loss": 0.25, "val_accuracy": 0.8}, step=2)
        tracking.log_test_metrics({"accuracy": 0.9, "roc_auc": None, "tp": 3})
        report = tmp_path / "report.txt"
        report.write_text("hello")
        tracking.log_artifacts([report], artifact_path="reports")
    data = client().get_run(run.info.run_id)
    assert data.info.status == "FINISHED"
    tags = data.data.tags
    assert tags["dvc_stage"] == "train" and tags["model"] == MODEL
    assert tags["dataset"] == DATASET and tags["dataset_hash"] == "abc123"
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert tags["library.numpy"] == np.__version__  # which releases made the run's numbers
    params = data.data.params
    assert params == tracking.flatten_config(cfg)
    assert params["models.resnet50.lr"] == str(cfg.models.resnet50.lr)
    assert params["dataset.name"] == cfg.dataset.name
    metrics = data.data.metrics
    assert metrics["test_accuracy"] == 0.9 and metrics["test_tp"] == 3
    assert "test_roc_auc" not in metrics and "val_auc" not in metrics
    history = client().get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)]
    experiment = client().get_experiment(data.info.experiment_id)
    assert experiment.name == f"{cfg.tracking.experiment_prefix}/{DATASET}"
    store = Path(mlflow.get_tracking_uri().removeprefix("sqlite:///")).parent
    assert experiment.artifact_location.startswith((store / "mlartifacts").as_uri())
    [artifact] = client().list_artifacts(run.info.run_id, "reports")
    assert artifact.path == "reports/report.txt"


@pytest.mark.parametrize(
    ("model_digest", "data_digest", "logged"),
    [("m", "d", True), ("other model", "d", False), ("m", "other data", False)],
)
def test_committed_test_metrics_are_reused_only_for_the_same_model_and_data(
    cfg, tmp_path, model_digest, data_digest, logged
):
    committed = tmp_path / "svm_hog.json"
    committed.write_text(
        json.dumps({"accuracy": 0.75, "collapsed": False, "model_digest": "m", "data_digest": "d"})
    )
    with tracking.start_run(cfg, DATASET, MODEL, f"train@{MODEL}") as run:
        assert tracking.log_committed_test_metrics(committed, model_digest, data_digest) is logged
        assert not tracking.log_committed_test_metrics(tmp_path / "none.json", "m", "d")
    data = client().get_run(run.info.run_id).data
    if logged:
        assert data.metrics == {"test_accuracy": 0.75, "test_collapsed": 0.0}  # digests: text
        assert str(committed) in data.tags["test_metrics_from"]
    else:
        assert data.metrics == {} and "test_metrics_from" not in data.tags


def test_reused_test_metrics_bring_the_same_evaluation_s_plots_and_predictions(cfg, tmp_path):
    """A byte-identical retraining's run (DVC skips evaluate) gets the committed evaluation's
    plot data and predictions beside its metrics, as an evaluated run has them."""
    committed = tmp_path / "svm_hog.json"
    committed.write_text(json.dumps({"accuracy": 0.75, "model_digest": "m", "data_digest": "d"}))
    plots = tmp_path / "plots"
    plots.mkdir()
    for name in ("roc.csv", "confusion.csv", "predictions.csv"):
        (plots / name).write_text("a,b\n1,2\n")
    with tracking.start_run(cfg, DATASET, MODEL, f"train@{MODEL}") as run:
        assert tracking.log_committed_test_metrics(committed, "m", "d", plots_dir=plots)
    logged = sorted(a.path for a in client().list_artifacts(run.info.run_id))
    assert logged == ["confusion.csv", "predictions.csv", "roc.csv"]


def test_flatten_truncates_long_values():
    flat = tracking.flatten_config({"a": {"b": "x" * 7000, "c": [1, 2]}, "d": None})
    assert len(flat["a.b"]) == 6000 and flat["a.b"].endswith("...")
    assert flat["a.c"] == "[1, 2]" and flat["d"] == "None"


def test_exception_marks_run_failed(cfg):
    with (
        pytest.raises(ZeroDivisionError),
        tracking.start_run(cfg, DATASET, MODEL, "train") as run,
    ):
        1 / 0  # noqa: B018
    assert status(run.info.run_id) == "FAILED"
    assert mlflow.active_run() is None


def test_interrupt_and_sigterm_mark_run_killed(cfg):
    with pytest.raises(KeyboardInterrupt), tracking.start_run(cfg, DATASET, MODEL, "train") as run:
        raise KeyboardInterrupt
    assert status(run.info.run_id) == "KILLED"
    before = signal.getsignal(signal.SIGTERM)
    with (
        pytest.raises(SystemExit) as exit_info,
        tracking.start_run(cfg, DATASET, MODEL, "train") as run,
    ):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert status(run.info.run_id) == "KILLED"
    assert signal.getsignal(signal.SIGTERM) == before


def test_resume_by_run_id_and_nested(cfg):
    with tracking.start_run(cfg, DATASET, MODEL, "train", dataset_hash="h1") as parent:
        with tracking.start_run(cfg, DATASET, MODEL, "train", nested=True) as child:
            tracking.log_epoch({"fold_accuracy": 0.7}, step=0)
        assert mlflow.active_run().info.run_id == parent.info.run_id
    assert client().get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    cfg.models.resnet50.lr = 0.5  # changed on resume: the original param value is kept
    with tracking.start_run(cfg, DATASET, MODEL, "evaluate", run_id=parent.info.run_id) as resumed:
        tracking.log_test_metrics({"accuracy": 0.5})
    assert resumed.info.run_id == parent.info.run_id
    data = client().get_run(parent.info.run_id)
    assert data.info.status == "FINISHED" and data.data.metrics["test_accuracy"] == 0.5
    assert data.data.params["models.resnet50.lr"] != "0.5"
    assert data.data.tags["dvc_stage"] == "evaluate" and data.data.tags["dataset_hash"] == "h1"


def test_close_stale_runs_marks_running_as_killed(cfg):
    with tracking.start_run(cfg, DATASET, MODEL, "train") as done:
        pass
    experiment_id = done.info.experiment_id
    # What a SIGKILLed process leaves behind: runs that never ended.
    stale = client().create_run(experiment_id, tags={"model": MODEL, "dataset": DATASET})
    other = client().create_run(experiment_id, tags={"model": "yolov8", "dataset": DATASET})
    assert status(stale.info.run_id) == "RUNNING"
    assert tracking.close_stale_runs(cfg, DATASET, MODEL) == [stale.info.run_id]
    assert status(stale.info.run_id) == "KILLED"
    assert status(other.info.run_id) == "RUNNING"
    assert status(done.info.run_id) == "FINISHED"
    assert tracking.close_stale_runs(cfg, "never-seen", MODEL) == []


def test_close_stale_runs_leaves_the_run_of_a_live_process_open(cfg, tmp_path):
    """`dvc queue start -j 2` trains the same model in two experiments at once (CV shards run
    on several machines): one attempt starting must not mark the other's live run KILLED."""
    tracking.configure(cfg)  # this test's store (an earlier test set another)
    script = (
        "import sys, time\n"
        "from omegaconf import OmegaConf\n"
        "from pipeline import tracking\n"
        f"cfg = OmegaConf.create({OmegaConf.to_container(cfg)!r})\n"
        f"with tracking.start_run(cfg, {DATASET!r}, {MODEL!r}, 'train') as run:\n"
        "    print(run.info.run_id, flush=True)\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    other = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        run_id = other.stdout.readline().strip()
        assert status(run_id) == "RUNNING"
        assert tracking.close_stale_runs(cfg, DATASET, MODEL) == []
        assert status(run_id) == "RUNNING"
    finally:
        other.kill()  # SIGKILL: the run is orphaned, and now stale
        other.wait()
    assert tracking.close_stale_runs(cfg, DATASET, MODEL) == [run_id]
    assert status(run_id) == "KILLED"


def test_logging_outside_a_run_is_refused(cfg):
    tracking.configure(cfg)
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        tracking.log_test_metrics({"accuracy": 1.0})


def test_check_reachable_fails_fast_for_dead_server(cfg, monkeypatch):
    # one short-timeout probe, no retries (MLflow's own client retries for minutes)
    calls = []
    real = tracking.urllib.request.urlopen

    def recording(url, timeout):
        calls.append((url, timeout))
        return real(url, timeout=timeout)

    monkeypatch.setattr(tracking.urllib.request, "urlopen", recording)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(tracking.TrackingUnavailableError, match=r"http://127\.0\.0\.1:9"):
        tracking.check_reachable(cfg)
    assert calls == [("http://127.0.0.1:9/health", tracking.HTTP_TIMEOUT_S)]


def test_check_reachable_fails_fast_for_a_dead_database(cfg, monkeypatch):
    """A `postgresql://` store where nothing listens: one short probe, not MLflow's two
    minutes of retries, and the password is not printed."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://u:secret@127.0.0.1:{port}/mlflow")
    started = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailableError, match=f"127.0.0.1:{port}") as raised:
        tracking.check_reachable(cfg)
    assert time.monotonic() - started < 10
    assert "secret" not in str(raised.value)


@pytest.fixture
def http_server():
    """A local HTTP server answering 200 on the paths in `ok`, 404 elsewhere."""
    ok: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path in ok else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", ok
    server.shutdown()
    server.server_close()


def test_check_reachable_http(cfg, monkeypatch, http_server):
    uri, ok = http_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(tracking.TrackingUnavailableError, match="404"):
        tracking.check_reachable(cfg)  # something answers, but it is not an MLflow server
    ok.add("/health")
    assert tracking.check_reachable(cfg) == uri


def test_check_reachable_sqlite(cfg, tmp_path, monkeypatch):
    uri = tracking.check_reachable(cfg)
    assert Path(uri.removeprefix("sqlite:///")).is_file()  # schema created up front
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    with pytest.raises(tracking.TrackingUnavailableError, match="a-file/mlflow.db"):
        tracking.check_reachable(cfg)


def test_a_schema_lock_that_cannot_be_created_is_named_at_once(cfg, tmp_path, monkeypatch):
    db = tmp_path / "mlflow.db"
    (tmp_path / "mlflow.db.lock").mkdir()  # something in the lock file's place
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with pytest.raises(tracking.TrackingUnavailableError, match="cannot create its lock file"):
        tracking.check_reachable(cfg)


def test_a_schema_lock_held_too_long_is_named(cfg, tmp_path, monkeypatch):
    from filelock import FileLock

    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setattr(tracking, "SCHEMA_LOCK_TIMEOUT_S", 0.1)
    held = FileLock(f"{db}.lock")  # as another process would hold it
    expected = pytest.raises(tracking.TrackingUnavailableError, match="mlflow.db.lock for 0.1 s")
    with held, expected:
        tracking.check_reachable(cfg)


def train_and_log(
    cfg, tmp_path, scale, val_accuracy, test_accuracy, val_loss=0.3, dataset_hash=None
):
    classifier = MeanIntensity({"kind": MeanIntensity.kind, "name": "mean", "scale": scale})
    model_dir = classifier.save(tmp_path / f"model-{scale}")
    with tracking.start_run(cfg, DATASET, "mean", "train", dataset_hash=dataset_hash) as run:
        tracking.log_selected_epoch({"val_accuracy": val_accuracy, "val_loss": val_loss})
        tracking.log_test_metrics({"accuracy": test_accuracy})
        info = tracking.log_model(classifier, model_dir)
    return run.info.run_id, info


def test_the_champion_is_chosen_on_validation_never_on_test(cfg, tmp_path):
    # `lucky` scores best on the test split but worse on validation: it must not win
    lucky, _ = train_and_log(cfg, tmp_path, scale=0.5, val_accuracy=0.80, test_accuracy=0.95)
    better, info = train_and_log(cfg, tmp_path, scale=1.0, val_accuracy=0.90, test_accuracy=0.85)
    assert client().get_run(better).data.tags[tracking.MODEL_URI_TAG] == info.model_uri

    version = tracking.register_best(cfg, DATASET)
    assert tracking.register_best(cfg, DATASET) == version  # idempotent
    name = tracking.registered_model_name(cfg, DATASET)
    registered = client().get_model_version_by_alias(name, tracking.CHAMPION_ALIAS)
    assert int(registered.version) == version
    assert registered.run_id == better != lucky
    reason = client().get_run(better).data.tags["champion_reason"]
    assert "selected_val_accuracy" in reason and "test metrics never choose" in reason

    model = mlflow.pyfunc.load_model(f"models:/{name}@{tracking.CHAMPION_ALIAS}")
    images = np.stack([np.full((8, 8, 3), 51, np.uint8), np.full((8, 8, 3), 255, np.uint8)])
    np.testing.assert_allclose(model.predict(images), [0.2, 1.0])


def champion_run(cfg):
    name = tracking.registered_model_name(cfg, DATASET)
    return client().get_model_version_by_alias(name, tracking.CHAMPION_ALIAS).run_id


def test_a_champion_by_loss_has_the_lowest_validation_loss(cfg, tmp_path):
    # ranked like an accuracy (highest first), `worse` would win
    worse, _ = train_and_log(cfg, tmp_path, 0.5, val_accuracy=0.9, test_accuracy=0.9, val_loss=0.8)
    better, _ = train_and_log(cfg, tmp_path, 1.0, val_accuracy=0.8, test_accuracy=0.8, val_loss=0.2)
    tracking.register_best(cfg, DATASET, metric="loss")
    assert champion_run(cfg) == better != worse
    reason = client().get_run(better).data.tags["champion_reason"]
    assert reason.startswith("lowest selected_val_loss = 0.2000 of 2 finished runs")


def test_a_register_metric_without_a_known_direction_names_the_key(cfg, tmp_path):
    train_and_log(cfg, tmp_path, 1.0, val_accuracy=0.8, test_accuracy=0.8)
    with pytest.raises(PipelineError, match=r"tracking\.register_metric: 'f1' .*'accuracy'"):
        tracking.register_best(cfg, DATASET, metric="f1")


def test_the_champion_is_chosen_among_runs_trained_on_the_current_data(cfg, tmp_path):
    # `leaky` (an image-level split, or an older data version) scores best: not comparable
    leaky, _ = train_and_log(cfg, tmp_path, 0.5, 0.99, 0.99, dataset_hash="old-digest")
    current, _ = train_and_log(cfg, tmp_path, 1.0, 0.80, 0.80, dataset_hash="new-digest")
    tracking.register_best(cfg, DATASET, data_digest="new-digest")
    assert champion_run(cfg) == current != leaky
    reason = client().get_run(current).data.tags["champion_reason"]
    assert "of 1 finished runs with a model within data digest new-digest" in reason
    with pytest.raises(LookupError, match="within data digest unseen"):
        tracking.register_best(cfg, DATASET, data_digest="unseen")
    tracking.register_best(cfg, DATASET)  # no digest: every data version competes
    assert champion_run(cfg) == leaky


def logged_run(experiment_id, val_accuracy, **tags):
    """A finished run with a selected validation score and `tags`, as the stages leave them."""
    run = client().create_run(experiment_id, tags=tags)
    client().log_metric(run.info.run_id, f"{tracking.SELECTED}val_accuracy", val_accuracy)
    client().set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_the_champion_is_found_among_many_child_runs_and_every_page_is_read(
    cfg, tmp_path, monkeypatch
):
    best, _ = train_and_log(cfg, tmp_path, scale=1.0, val_accuracy=0.8, test_accuracy=0.8)
    experiment_id = client().get_run(best).info.experiment_id
    uri = {tracking.MODEL_URI_TAG: "models:/not-a-model"}
    for score in (0.7, 0.6):  # two more top-level candidates, worse on validation
        logged_run(experiment_id, score, **uri)
    # CV fold runs: children scoring higher, one even tagged with a model URI
    for score in (0.99, 0.98, 0.97):
        logged_run(experiment_id, score, **{tracking.PARENT_RUN_TAG: best})
    logged_run(experiment_id, 0.999, **{tracking.PARENT_RUN_TAG: best}, **uri)
    # A store answers one page at a time (1000 runs by MLflow's default): pages of 2 here
    search = mlflow.MlflowClient.search_runs

    def paged(self, *args, max_results=1000, **kwargs):
        return search(self, *args, max_results=min(max_results, 2), **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "search_runs", paged)
    tracking.register_best(cfg, DATASET)
    assert champion_run(cfg) == best
    assert "of 3 finished runs with a model" in client().get_run(best).data.tags["champion_reason"]


def test_register_best_without_candidates_says_why(cfg):
    with pytest.raises(tracking.NoChampionError, match="selected_val_accuracy") as raised:
        tracking.register_best(cfg, "empty")
    assert isinstance(raised.value, PipelineError)  # a stage prints it as one line
    assert str(raised.value).startswith("no finished run with a model to register for empty ")


def test_code_and_machine_names_the_commit_and_whether_tracked_files_changed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    subprocess.run([*git, "add", "params.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    (tmp_path / "untracked.txt").write_text("not part of the code")

    clean = tracking.code_and_machine()
    assert clean["git_revision"] == head.strip()
    assert clean["git_dirty"] is False
    assert clean["machine"]["cpus"] == os.cpu_count()
    assert set(clean["libraries"]) == set(tracking.NUMERIC_LIBRARIES)
    assert clean["libraries"]["numpy"] == np.__version__

    (tmp_path / "params.yaml").write_text("seed: 2\n")
    assert tracking.code_and_machine()["git_dirty"] is True


def test_library_versions_say_which_release_or_that_none_is_installed(monkeypatch):
    monkeypatch.setattr(tracking, "NUMERIC_LIBRARIES", ("numpy", "no-such-package-xyz"))
    assert tracking.library_versions() == {
        "numpy": np.__version__,
        "no-such-package-xyz": "not installed",
    }


def test_cpu_model_reads_the_processor_name_or_falls_back(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU 9000 @ 3.0GHz\n")
    monkeypatch.setattr(tracking, "CPUINFO", cpuinfo)
    assert tracking.cpu_model() == "Example CPU 9000 @ 3.0GHz"
    assert tracking.code_and_machine()["machine"]["cpu_model"] == "Example CPU 9000 @ 3.0GHz"

    monkeypatch.setattr(tracking, "CPUINFO", tmp_path / "absent")  # macOS, Windows
    monkeypatch.setattr(tracking.platform, "processor", lambda: "arm")
    assert tracking.cpu_model() == "arm"


def test_code_and_machine_outside_a_repository_says_unknown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    found = tracking.code_and_machine()
    assert found["git_revision"] == "unknown"
    assert found["git_dirty"] is False


def test_stage_wall_minutes_reads_each_stage_of_a_shared_run_from_its_own_duration(cfg):
    """evaluate resumes the training's run (its tag, its end time): the run's span would give
    evaluate the training's minutes and train none; the logged durations give each its own."""
    with tracking.start_run(cfg, dataset=DATASET, model=MODEL, stage=f"train@{MODEL}") as run:
        tracking.log_durations({"train": 150.0})
    time.sleep(0.05)
    with tracking.start_run(
        cfg, dataset=DATASET, model=MODEL, stage=f"evaluate@{MODEL}", run_id=run.info.run_id
    ):
        tracking.log_durations({"evaluate": 30.0})
    with tracking.start_run(cfg, dataset=DATASET, model=MODEL, stage=f"cv@{MODEL}"):
        pass
    stages = [f"train@{MODEL}", f"evaluate@{MODEL}", f"cv@{MODEL}", "probe"]
    minutes = tracking.stage_wall_minutes(cfg, DATASET, stages)
    assert minutes[f"train@{MODEL}"] == 2.5 and minutes[f"evaluate@{MODEL}"] == 0.5
    assert 0 <= minutes[f"cv@{MODEL}"] < 1 and "probe" not in minutes  # span; no run: left out


def test_a_missing_champion_says_how_to_register_it(cfg, tmp_path):
    """A fresh clone's `dvc repro` retrains byte-identical models, so DVC skips evaluate and
    report: the store has runs but no champion, and the README's `models:/...@champion`
    must say which command registers one, not only that a stage does."""
    with pytest.raises(PipelineError) as caught:
        tracking.download_model(cfg, "models:/all-detect-synthetic@champion", tmp_path / "m")
    message = str(caught.value)
    assert "registered models: none" in message
    assert "python -m pipeline.stages.report" in message
