"""The stage wrapper: where a stage may run."""

from __future__ import annotations

from pathlib import Path

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
