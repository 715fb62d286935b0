"""What a team lead sees: the MLflow UI, rendered by a real headless Chromium, lists one run per
model with its test metrics.

The store is the demo's (`ALL_DETECT_UI_STORE=<repo>/mlflow.db` after `dvc repro`, screenshot in
`reports/mlflow_ui.png`) or, by default, a small one logged here through `pipeline.tracking`, so
the test checks our own logging end to end. Chromium is Debian's (`scripts/install_chromium.sh`),
driven by Playwright; the test skips when either is missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline import tracking
from pipeline.evaluate.metrics import compute_metrics
from tests.mlflow_server import mlflow_server

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
STORE_ENV = "ALL_DETECT_UI_STORE"
MODELS = ("svm_hog", "resnet50", "resnet50_svm", "densenet121", "yolov8")
# Metric columns the test adds to the runs table, named as `tracking.log_test_metrics` logs them.
SHOWN = tuple(tracking.TEST_PREFIX + m for m in ("accuracy", "f1", "roc_auc"))
HIDDEN = ("Source", "Models")  # default columns removed to make room for them
DVC_EXPERIMENT = "brisk-cell"  # the fixture's runs come from this `dvc exp run`
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 30_000
# The UI prints metrics at full or rounded precision depending on the version: compare loosely.
DISPLAY_TOLERANCE = 5e-4


@pytest.fixture
def playwright_api():
    """Playwright's sync API module, or a skip naming what is missing.

    Debian's Chromium is used where installed (offline machines); elsewhere (GitHub runners)
    the browser that `playwright install chromium` downloaded.
    """
    api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        with api.sync_playwright() as pw:
            if not Path(pw.chromium.executable_path).exists():
                pytest.skip(f"{CHROMIUM} missing: run scripts/install_chromium.sh")
    return api


@pytest.fixture
def store(cfg, tmp_path, monkeypatch) -> Path:
    """The SQLite file to browse: `$ALL_DETECT_UI_STORE`, else five runs logged here."""
    if os.environ.get(STORE_ENV):
        db = Path(os.environ[STORE_ENV])
        if not db.is_file():
            pytest.fail(f"{STORE_ENV}={db}: no such SQLite file (run `dvc repro` first)")
        return db
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("DVC_EXP_NAME", DVC_EXPERIMENT)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0" * 40)
    manifest = pd.DataFrame(
        {"id": ["a", "b"], "label": ["all", "hem"], "group": ["a", "b"], "split": ["test"] * 2}
    )
    rng = np.random.default_rng(0)
    y_true = np.repeat([1, 0], 30)
    for separation, model in enumerate(MODELS, start=1):  # each model a little better
        logits = 0.6 * separation * (2 * y_true - 1) + rng.normal(size=y_true.size)
        metrics = compute_metrics(y_true, 1 / (1 + np.exp(-logits)), n_boot=20)
        with tracking.start_run(
            cfg, dataset=cfg.dataset.name, model=model, stage=f"train@{model}", dataset_hash="0f"
        ):
            tracking.log_dataset(
                manifest, cfg.dataset.name, cfg.dataset.root, "0f" * 8, context="training"
            )
            tracking.log_test_metrics(metrics)
    return db


@pytest.fixture
def mlflow_ui(store: Path, tmp_path: Path) -> Iterator[str]:
    """An `mlflow server` on the store; its base URL."""
    with mlflow_server(store, tmp_path) as url:
        yield url


def _latest_runs(uri: str, experiment: str) -> dict[str, mlflow.entities.Run]:
    """Per model, its newest training run (train, then evaluate, stage; CV and tuning runs are
    others): it must hold its test metrics, or the evaluate stage did not log into it."""
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment!r} missing from {uri}"
    runs = {}
    for model in MODELS:
        stages = {f"train@{model}", f"evaluate@{model}"}
        trained = [
            run
            for run in client.search_runs(
                [found.experiment_id],
                filter_string=f"tags.model = '{model}'",
                order_by=["attributes.start_time DESC"],
            )
            if run.data.tags.get("dvc_stage") in stages
        ]
        assert trained, f"no {model} training run in {experiment!r} of {uri}"
        newest = trained[0]
        missing = [k for k in SHOWN if k not in newest.data.metrics]
        assert not missing, (
            f"newest {model} training run {newest.info.run_id} in {uri} lacks metrics {missing}"
            f" (its stage tag: {newest.data.tags.get('dvc_stage')})"
        )
        runs[model] = newest
    return runs


def _show_columns(page) -> None:
    """Through the 'Columns' menu, as a user would: add the test metrics, drop wide extras."""
    page.get_by_role("button", name="Columns").click()
    search = page.get_by_placeholder("Search columns")
    for title in SHOWN + HIDDEN:
        search.fill(title)
        # The search highlights matches, so compare whole titles, not `title=` attributes.
        exact = page.locator("[class*='tree-title']", has_text=re.compile(f"^{re.escape(title)}$"))
        node = page.locator("[class*='tree-treenode']", has=exact)
        node.locator(":scope > [class*='tree-checkbox']").click()
    search.fill("")
    page.keyboard.press("Escape")
    assistant_close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if assistant_close.count():
        assistant_close.click()


def _check_table(
    page, expect, runs: dict[str, mlflow.entities.Run], dataset: str, shot: Path
) -> None:
    """Every model's row (named with its DVC experiment), its dataset and its test metric
    cells with the stored values, are on screen."""
    for key in SHOWN:
        header = page.locator(f"[role=columnheader][col-id='metrics.`{key}`']")
        expect(header, f"{key} column (screenshot {shot})").to_be_in_viewport()
    for model, run in runs.items():
        row = page.locator(f"[role=row][row-id='{run.info.run_id}']")
        name = row.locator("[col-id='attributes.`Run Name`']")
        expect(name, f"{model} row (screenshot {shot})").to_be_in_viewport()
        expect(name, f"screenshot {shot}").to_contain_text(model)
        experiment = run.data.tags.get("dvc_exp_name")
        if experiment:
            expect(name, f"DVC experiment in the name (screenshot {shot})").to_contain_text(
                experiment
            )
        logged = row.filter(has_text=f"{dataset} (").first  # the Dataset cell: name (digest)
        expect(logged, f"{model} dataset (screenshot {shot})").to_be_visible()
        for key in SHOWN:
            cell = row.locator(f"[col-id='metrics.`{key}`']")
            expect(cell, f"{model} {key} (screenshot {shot})").to_be_in_viewport()
            shown, stored = cell.inner_text().strip(), run.data.metrics[key]
            assert abs(float(shown) - stored) < DISPLAY_TOLERANCE, (
                f"{model} {key}: UI shows {shown!r}, store holds {stored} (screenshot {shot})"
            )


def test_runs_table_shows_each_model_with_its_test_metrics(
    playwright_api, cfg, store, mlflow_ui, tmp_path
):
    experiment = tracking.experiment_name(cfg, cfg.dataset.name)
    runs = _latest_runs(f"sqlite:///{store}", experiment)
    tags = mlflow.MlflowClient(f"sqlite:///{store}").get_experiment_by_name(experiment).tags
    assert tags.get(tracking.EXPERIMENT_KIND_TAG) == tracking.EXPERIMENT_KIND
    experiment_id = next(iter(runs.values())).info.experiment_id
    shot = REPO / "reports" / "mlflow_ui.png" if os.environ.get(STORE_ENV) else tmp_path / "ui.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    expect = playwright_api.expect
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM) if CHROMIUM.exists() else None,
            headless=True,
            args=LAUNCH_ARGS,
            timeout=UI_TIMEOUT_MS,
        )
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080}, color_scheme="light")
            page.set_default_timeout(UI_TIMEOUT_MS)
            # The experiment's own page, as a team lead opens it. MLflow 3.17's UI starts on its
            # GenAI view whatever the experiment's kind tag says (a per-browser switch, remembered
            # once flipped): one click on "Model training" shows the runs, as the README says.
            page.goto(f"{mlflow_ui}/#/experiments/{experiment_id}")
            try:
                page.get_by_text("Model training", exact=True).first.click()
                for run in runs.values():
                    page.locator(f"[role=row][row-id='{run.info.run_id}']").first.wait_for()
                _show_columns(page)
                _check_table(page, expect, runs, cfg.dataset.name, shot)
            finally:
                page.screenshot(path=str(shot))
        finally:
            browser.close()
