"""`dvc exp run --temp` and `--queue`: each experiment runs with its own params, in its own
copy of the repository, and logs to the real repository's MLflow store.

A real git + DVC repository is made from this project's dvc.yaml, conf/ and pipeline/ with the
tiny demo settings as its default experiment; DVC composes conf/ with Hydra for every `-S`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from pipeline import tracking
from tests.mlflow_server import fresh_postgres_database, mlflow_server
from tests.workspace import MODELS, TINY_OVERRIDES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
QUEUE_TIMEOUT_S = 900


def nested(overrides: list[str]) -> dict:
    """`a.b=1` overrides as the nested mapping of an experiment file."""
    tree: dict = {}
    for item in overrides:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return tree


def sh(repo: Path, *args: str, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def dvc_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A committed git + DVC repository of this pipeline whose default is the tiny demo."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("dvc.yaml", "conf", "pipeline", ".dvcignore", ".gitignore"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, repo / part)
    tiny = nested(list(TINY_OVERRIDES))
    demo = repo / "conf" / "experiment" / "demo.yaml"
    demo.write_text("# @package _global_\n" + yaml.safe_dump(tiny))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        ALL_DETECT_JOBS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    sh(repo, "git", "init", "-q", env=env)
    sh(repo, "dvc", "init", "-q", env=env)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # hydra: enabled
    sh(repo, sys.executable, "-m", "pipeline.config", "write", env=env)
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-q", "-m", "tiny pipeline", env=env)
    return repo, env


def experiments(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    """Experiment name -> {"params": params.yaml, "metrics": {path: metrics}}."""
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json", env=env))
    out = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            revs = exp.get("revs") or []
            for rev in revs:
                data = rev.get("data") or {}
                name = rev.get("name") or exp.get("name")
                if name and data:
                    out[name] = {
                        "params": data["params"]["params.yaml"]["data"],
                        "metrics": {
                            k: v.get("data", {}) for k, v in data.get("metrics", {}).items()
                        },
                    }
    return out


def test_a_temp_experiment_runs_with_its_own_params(dvc_repo) -> None:
    repo, env = dvc_repo
    sh(repo, "dvc", "exp", "run", "--temp", "-n", "otsu-only", "segment", "-S", "segment=otsu",
       env=env)  # fmt: skip
    found = experiments(repo, env)["otsu-only"]
    assert found["params"]["segment"]["method"] == "otsu"
    segmentation = found["metrics"]["reports/metrics/synthetic/segmentation.json"]
    assert segmentation["method"] == "otsu"  # the workspace's default is otsu_active_contour


def run_queue(
    repo: Path, env: dict[str, str], settings: dict[str, dict], target: str
) -> dict[str, dict]:
    """Queue one experiment per `settings` entry (name -> {param: value}), run them two at a
    time with `dvc queue start -j 2`, wait, and return `experiments()`; fails with the logs of
    any failed one."""
    for name, values in settings.items():
        sets = [arg for key, value in values.items() for arg in ("-S", f"{key}={value}")]
        sh(repo, "dvc", "exp", "run", "--queue", "-n", name, target, *sets, env=env)
    # The workers it starts outlive it and inherit its stdout: a pipe (capture_output) would
    # make the wait for its end last as long as the longest-lived worker, so a file.
    with (repo.parent / "queue-start.log").open("w") as log:
        subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=repo, env=env, stdout=log,
                       stderr=subprocess.STDOUT, timeout=120, check=True)  # fmt: skip
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    try:
        while True:
            status = sh(repo, "dvc", "queue", "status", env=env)
            if not any(word in status for word in ("Queued", "Running")):
                break
            assert time.monotonic() < deadline, f"queue still busy:\n{status}"
            time.sleep(5)
    finally:  # a worker that lingers once the queue is empty (seen with DVC 3) is stopped
        subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=env, capture_output=True,
                       timeout=120)  # fmt: skip
    logs = "".join(
        subprocess.run(["dvc", "queue", "logs", name], cwd=repo, env=env, capture_output=True,
                       text=True).stdout[-3000:]
        for name in settings
    ) if "Failed" in status else ""  # fmt: skip
    assert "Failed" not in status, f"{status}\n{logs}"
    return experiments(repo, env)


# A grid of two segmentation methods x two crop sides (the walkthrough in docs/scaling.md).
GRID = {
    "exp-otsu-32": {"segment": "otsu", "crop.size": 32},
    "exp-snake-40": {"segment": "otsu_active_contour", "crop.size": 40},
}


def check_runs(client: mlflow.MlflowClient, found: dict[str, dict], evaluated: bool) -> None:
    """Each experiment's outputs and its svm_hog MLflow run follow its own params."""
    (experiment,) = client.search_experiments(filter_string="name = 'all-detect/synthetic'")
    for name, values in GRID.items():
        method, side = values["segment"], values["crop.size"]
        assert found[name]["params"]["segment"]["method"] == method
        segmentation = found[name]["metrics"]["reports/metrics/synthetic/segmentation.json"]
        assert segmentation["method"] == method
        (run,) = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.dvc_exp_name = '{name}' and tags.model = 'svm_hog'",
        )
        assert run.info.status == "FINISHED"
        assert run.data.params["segment.method"] == method
        assert run.data.params["crop.size"] == str(side)
        assert name in run.info.run_name and run.data.tags["dvc_exp_baseline_rev"]
        assert run.inputs.dataset_inputs[0].dataset.name == "synthetic"
        assert len(run.data.metrics) > 1
        if evaluated:  # the evaluate stage added its test metrics to the training run
            scored = found[name]["metrics"]["reports/metrics/synthetic/svm_hog.json"]
            assert run.data.metrics["test_accuracy"] == pytest.approx(scored["accuracy"])
            (model,) = client.search_logged_models(
                [experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
            )
            assert model.model_id in run.data.tags[tracking.MODEL_URI_TAG]


def test_two_queued_experiments_each_follow_their_own_params(dvc_repo) -> None:
    repo, env = dvc_repo
    found = run_queue(repo, env, GRID, "train@svm_hog")
    check_runs(mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}"), found, evaluated=False)
    assert not (repo / ".dvc" / "tmp" / "exps" / "mlflow.db").exists()  # the real repo's store


def test_two_queued_experiments_log_at_once_to_a_postgres_backed_server(
    dvc_repo, tmp_path: Path
) -> None:
    """A team's tracking server: `mlflow server` on PostgreSQL with served artifacts, written to
    by two queue workers at once (train + evaluate each); every run, param, metric and model
    arrives."""
    repo, env = dvc_repo
    with fresh_postgres_database() as database, mlflow_server(database, tmp_path, 2) as url:
        env = {**env, "MLFLOW_TRACKING_URI": url}
        found = run_queue(repo, env, GRID, "evaluate@svm_hog")
        check_runs(mlflow.MlflowClient(url), found, evaluated=True)
    assert not (repo / "mlflow.db").exists()  # nothing fell back to the local store


def test_a_byte_identical_retraining_gets_the_test_metrics_and_leaves_the_lock_as_it_was(
    dvc_repo,
) -> None:
    """A fresh clone retrains (its models are not cached) and HOG + SVM comes out byte-identical
    to the locked model: DVC skips evaluate and dvc.lock stays byte for byte, yet the new
    training run must carry the test metrics (from the evaluate output of that very model)."""
    repo, env = dvc_repo
    target = "evaluate@svm_hog"
    sh(repo, "dvc", "repro", target, env=env)
    locked = (repo / "dvc.lock").read_text()
    evaluated = json.loads((repo / "reports/metrics/synthetic/svm_hog.json").read_text())
    again = sh(repo, "dvc", "repro", "--force", "--single-item", "train@svm_hog", env=env)
    assert "Running stage 'train@svm_hog'" in again
    rerun = sh(repo, "dvc", "repro", target, env=env)
    assert f"Running stage '{target}'" not in rerun, rerun
    assert (repo / "dvc.lock").read_text() == locked
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("all-detect/synthetic")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.model = 'svm_hog'",
        order_by=["attributes.start_time DESC"],
    )
    assert len(runs) == 2
    newest, first = runs
    assert newest.data.tags["model_digest"] == first.data.tags["model_digest"]  # same model
    assert newest.data.tags["dvc_stage"] == "train@svm_hog"
    assert newest.data.metrics["test_accuracy"] == evaluated["accuracy"]
    assert newest.data.metrics["test_f1_weighted"] == first.data.metrics["test_f1_weighted"]
    assert "test_metrics_from" in newest.data.tags


def test_gpu_cv_script_runs_every_cv_without_git_and_archives_its_snapshot(tmp_path: Path) -> None:
    """scripts/gpu_cv.sh on a copy of the tree with no git repository (what a lent GPU host
    gets), here on the CPU with the tiny demo and 2 folds: DVC runs every model's CV and the
    ensemble without SCM, and one archive holds the snapshot with the note and the lock."""
    tree = tmp_path / "tree"
    for part in ("dvc.yaml", "conf", "pipeline", "scripts", ".dvc/config", ".dvcignore"):
        source, target = REPO / part, tree / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", OUT=str(tmp_path))
    args = ["train.device=cpu", "cv.folds=2", *TINY_OVERRIDES]
    sh(tree, "bash", "scripts/gpu_cv.sh", "cv_test", "at abc1234", *args, env=env)
    with tarfile.open(tmp_path / "cv_test.tar.xz") as archive:
        names = set(archive.getnames())
        provenance = json.load(archive.extractfile("cv_test/provenance.json"))
        lock = yaml.safe_load(archive.extractfile("cv_test/dvc.lock"))
    for model in (*MODELS, "ensemble"):
        assert f"cv_test/cv/{model}/predictions.csv" in names
        assert f"cv_test/metrics/cv/{model}.json" in names
    assert {"ingest", "crop", "ensemble_cv"} <= set(lock["stages"])
    assert provenance["note"].startswith(
        'at abc1234; STAGES="cv ensemble_cv" bash scripts/gpu_cv.sh'
    )
    assert provenance["train_device"] == "cpu"
