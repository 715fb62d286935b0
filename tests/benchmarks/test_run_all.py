"""The throughput benchmark's helpers that decide whether its numbers can be trusted: the
median/range summary, the warm-up, the refusal to measure a busy machine, and the peak memory
of a child process (each well under 30 s; the benchmark itself is never run here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import run_all


def test_spread_reports_median_and_range() -> None:
    assert run_all.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    assert run_all.flat("seconds", [2.0, 9.0, 1.0]) == {
        "seconds": 2.0,
        "seconds_range": [1.0, 9.0],
    }
    with pytest.raises(ValueError):
        run_all.spread([])


def test_repeat_discards_one_warm_up_call() -> None:
    calls = iter(range(10))
    assert run_all.repeat(lambda: next(calls), 3) == [1, 2, 3]  # call 0 was the warm-up
    with pytest.raises(ValueError):
        run_all.repeat(lambda: 0, 0)


def test_busy_machine_is_refused_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run_all.os, "getloadavg", lambda: (5.0, 3.0, 1.0))
    with pytest.raises(run_all.Refused, match="1-minute load 5.00 > --max-load 1.00"):
        run_all.check_load(1.0, allow_busy=False)
    state = run_all.check_load(1.0, allow_busy=True)
    assert state["busy"] is True and state["load"]["start"] == [5.0, 3.0, 1.0]
    assert run_all.check_load(9.0, allow_busy=False)["busy"] is False

    out = tmp_path / "latest.json"
    assert run_all.main(["--max-load", "1", "--out", str(out)]) == run_all.EXIT_REFUSED
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "--allow-busy" in message
    assert not out.exists()  # refused before measuring anything


def test_missing_cnmc_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dataset", "cnmc", "--cnmc-root", str(tmp_path / "absent"), "--allow-busy"]
    assert run_all.main([*argv, "--out", str(tmp_path / "x.json")]) == run_all.EXIT_REFUSED
    assert "no C-NMC fold 0" in capsys.readouterr().err


def test_child_peak_rss_and_wall_time(tmp_path: Path) -> None:
    allocate = "import time; b = b'x' * (64 * 2**20); time.sleep(0.5)"
    result = run_all.run_measured([sys.executable, "-c", allocate], tmp_path, run_all.child_env())
    assert result["peak_rss_mib"] >= 64
    assert result["seconds"] >= 0.5
    if result["peak_tree_rss_mib"] is not None:  # psutil present
        assert result["peak_tree_rss_mib"] >= 64


def test_child_peak_rss_is_its_own_not_this_process(tmp_path: Path) -> None:
    """A forked child starts with its parent's RSS as high-water mark; this (torch-holding)
    process must not leak into the figure."""
    result = run_all.run_measured([sys.executable, "-c", "pass"], tmp_path, run_all.child_env())
    assert result["peak_rss_mib"] < 64


def test_child_peak_rss_includes_its_reaped_workers(tmp_path: Path) -> None:
    worker = "b = b'x' * (64 * 2**20)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {worker!r}])"
    result = run_all.run_measured([sys.executable, "-c", parent], tmp_path, run_all.child_env())
    assert result["peak_rss_mib"] >= 64


def test_failing_child_raises_with_its_output(tmp_path: Path) -> None:
    failing = "import sys; print('boom', file=sys.stderr); sys.exit(3)"
    with pytest.raises(RuntimeError, match=r"\(3\):\nboom"):
        run_all.run_measured([sys.executable, "-c", failing], tmp_path, run_all.child_env())


def _ranged(key: str, value: float) -> dict:
    return {key: value, f"{key}_range": [value * 0.9, value * 1.1]}


def _every_section() -> dict:
    """Results as main() writes them, with every section filled."""
    ranged = _ranged
    return {
        "machine": {"date": "today", "cpu_count": 2, "device": "cpu", "torch": "2"},
        "busy": True,
        "load": {"start": [1.5, 1.0, 0.5], "end": [2.0, 1.2, 0.6], "max_load": 0.5, "cores": 2},
        "settings": {"dataset": "synthetic", "repeats": 3},
        "pool_startup": {"jobs": 2, **ranged("startup_s", 0.4)},
        "segmentation": [
            {
                "method": "otsu",
                "jobs": 2,
                "source": "demo",
                "images": 8,
                **ranged("images_per_s", 9),
            }
        ],
        "stages": [
            {
                "stage": "crop",
                "jobs": 1,
                "images": 80,
                "peak_rss_mib": 200.0,
                "peak_tree_rss_mib": None,
                **ranged("seconds", 3.0),
                **ranged("images_per_s", 27),
            }
        ],
        "training_loop": [
            {
                "model": "resnet50",
                "image_size": 64,
                "batches": 3,
                "batch_size": 32,
                "ratio": 0.9,
                **ranged("pipeline_images_per_s", 9),
                **ranged("raw_images_per_s", 10),
            }
        ],
        "models": [
            {
                "model": "svm_hog",
                "fit_train_images_per_s": 3.0,
                **ranged("fit_seconds", 30),
                **ranged("inference_ms_per_image", 6),
            }
        ],
        "repro": {
            "pipeline": "tiny demo",
            **ranged("from_scratch_s", 240),
            **ranged("no_change_s", 2),
        },
    }


def test_markdown_renders_every_section() -> None:
    results = _every_section()
    table = run_all.markdown(results)
    json.dumps(results)  # what is written must be JSON
    assert "BUSY" in table and "stage `crop`, 1 job(s), 80 images | s | 3.0 [2.7, 3.3]" in table
    assert table.count("\n| ") == 11  # the header and 10 rows


def test_results_json_and_markdown_table_are_written_side_by_side(tmp_path: Path) -> None:
    """A run replaces its own dataset's section and keeps the other dataset's."""
    out = tmp_path / "bench.json"
    earlier_cnmc = _every_section()
    out.write_text(json.dumps({"cnmc": earlier_cnmc}))
    argv = ["--allow-busy", "--skip", *run_all.SECTIONS, "--out", str(out)]
    assert run_all.main(argv) == 0
    saved = json.loads(out.read_text())
    assert saved["cnmc"] == earlier_cnmc
    results = saved["synthetic"]
    assert results["settings"]["sections"] == [] and "end" in results["load"]
    table = out.with_suffix(".md").read_text()
    assert "## synthetic\n\n" + run_all.markdown(results) in table


@pytest.mark.parametrize("content", ["{not json", '{"machine": {}}', "[1, 2]"])
def test_a_file_not_laid_out_by_dataset_is_refused_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    out = tmp_path / "bench.json"
    out.write_text(content)
    argv = ["--allow-busy", "--skip", *run_all.SECTIONS, "--out", str(out)]
    assert run_all.main(argv) == run_all.EXIT_REFUSED
    assert out.read_text() == content and str(out) in capsys.readouterr().err
