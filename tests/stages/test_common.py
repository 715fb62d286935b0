"""The stage wrapper: where a stage may run."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.workspace import make_workspace, run_stage


def test_a_stage_below_its_workspace_is_refused_before_writing_anything(tmp_path, capsys):
    workspace = make_workspace(tmp_path / "repo")
    below = workspace / "notebooks"
    below.mkdir()

    assert run_stage(below, "generate_demo") == 2

    err = capsys.readouterr().err
    assert f"run it from the workspace {workspace.resolve()}" in err
    assert not any(below.iterdir()) and not (workspace / "artifacts").exists()


def test_a_scratch_folder_with_its_own_params_is_a_workspace_of_its_own(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    scratch = make_workspace(repo / "scratch")

    assert run_stage(scratch, "generate_demo") == 0
    assert run_stage(scratch, "ingest") == 0

    # the relative demo root resolves in the scratch folder, where generate_demo wrote it
    manifest = scratch / "artifacts" / "synthetic" / "manifest.csv"
    assert manifest.is_file() and not (repo / "artifacts").exists()
    assert Path(scratch / "artifacts" / "demo").is_dir()


@pytest.mark.parametrize(
    "module",
    sorted(
        p.stem
        for p in (Path(__file__).parents[2] / "pipeline" / "stages").glob("*.py")
        if p.stem not in ("__init__", "common")
    ),
)
def test_every_stage_prints_its_command_and_description_for_help(module, capsys):
    """`--help` exits 0 naming `python -m pipeline.stages.<module>` and saying what it does,
    without composing the config (compare_segmentation's Hydra lexer failed on `--help`)."""
    stage_module = importlib.import_module(f"pipeline.stages.{module}")
    try:
        code = stage_module.main(["--help"])
    except SystemExit as exc:  # argparse
        code = exc.code
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"usage: python -m pipeline.stages.{module}"), out
    last_word = stage_module.__doc__.split("\n\n")[0].split()[-1]
    assert last_word in out, out  # the description's whole first paragraph, not one line


def test_sigterm_mid_write_leaves_no_staging_folder(tmp_path):
    """`kill` (or `timeout`, a scheduler's preemption) sends SIGTERM: like Ctrl-C, the stage
    must delete its half-written staging folder and exit 143, not die leaving it beside the
    outputs (gigabytes of crops on real data) until the same stage happens to run again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    workspace = make_workspace(tmp_path / "ws", ["demo.n_per_class=2000"])
    artifacts = workspace / "artifacts"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "ALL_DETECT_JOBS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.stages.generate_demo"],
        cwd=workspace,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any(p.suffix == ".png" for p in artifacts.rglob(".*.tmp/**/*")):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no staged image after 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert list(artifacts.iterdir()) == []  # neither a staging folder nor a half demo


def test_a_folder_that_refuses_writes_with_eperm_is_one_clear_line(tmp_path, capsys, monkeypatch):
    """An immutable folder (chattr +i) or a FUSE/SMB mount answers EPERM, not EACCES: the
    stage must name the path in one line, as for a read-only or forbidden folder."""
    import errno
    import os
    import tempfile

    def refused(*args, dir=None, prefix="", suffix="", **kwargs):
        path = os.path.join(dir, f"{prefix}x{suffix}")
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)

    workspace = make_workspace(tmp_path / "ws")
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    assert run_stage(workspace, "generate_demo") == 1
    err = capsys.readouterr().err
    assert "error in stage generate_demo: [Errno 1] Operation not permitted" in err
    assert "artifacts/.demo." in err and "Traceback" not in err
