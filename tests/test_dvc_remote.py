"""A teammate's fresh clone: `dvc push` to a remote, `git clone` + `dvc pull` elsewhere, and
the pipeline (up to `train@svm_hog`, on the tiny demo) is up to date there: nothing re-runs.

Every output under the git-ignored `artifacts/` must therefore be DVC-cached (pushed), including
small ones such as `quarantine.txt` and the persisted checkpoint folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workspace import make_workspace

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
TARGET = "train@svm_hog"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def sh(cwd: Path, *command: str) -> str:
    """Run `command` in `cwd` with this venv's python first on PATH (DVC stages call `python`)."""
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ALL_DETECT_JOBS": "1",
        "DVC_NO_ANALYTICS": "1",
    }
    if command[0] == "dvc":
        command = (sys.executable, "-m", *command)
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_pushed_pipeline_is_up_to_date_in_a_fresh_clone_after_pull(tmp_path):
    origin, clone, remote = tmp_path / "origin", tmp_path / "clone", tmp_path / "remote"
    origin.mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy2(REPO / name, origin / name)
    shutil.copytree(REPO / "pipeline", origin / "pipeline", ignore=shutil.ignore_patterns("__py*"))
    make_workspace(origin)  # params.yaml with the tiny demo settings
    sh(origin, "git", "init", "-q")
    sh(origin, "dvc", "init", "-q")
    sh(origin, "dvc", "remote", "add", "-d", "shared", str(remote))
    sh(origin, "dvc", "repro", TARGET)
    sh(origin, "git", "add", "-A")
    sh(origin, "git", "commit", "-q", "-m", "tiny pipeline")
    sh(origin, "dvc", "push")

    sh(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / ".dvc" / "cache").exists() and not (clone / "artifacts").exists()
    sh(clone, "dvc", "pull", TARGET, "--with-deps")
    assert "up to date" in sh(clone, "dvc", "status", TARGET, "--with-deps")
    rerun = sh(clone, "dvc", "repro", TARGET)
    assert "Running stage" not in rerun, rerun
    assert (clone / "artifacts" / "synthetic" / "dataset" / "manifest.csv").is_file()
