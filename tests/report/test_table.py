import re

import pandas as pd
import pytest

from pipeline.evaluate.metrics import compute_metrics
from pipeline.report.table import PAPER_TABLE2, build_table, format_ci, write_report

Y = [1, 1, 1, 1, 0, 0, 0, 0]
P = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1]


@pytest.fixture(scope="module")
def metrics():
    m = compute_metrics(Y, P, n_boot=200)
    return {
        ("synthetic", "yolov8"): m,
        ("all_idb2", "resnet50_svm"): m,
        ("cnmc", "yolov8"): m,
        ("cnmc", "svm_hog"): m,
    }


def test_format_ci():
    m = {"accuracy": 0.912, "accuracy_ci_low": 0.85, "accuracy_ci_high": 0.9612}
    assert format_ci(m, "accuracy") == "91.2 [85.0–96.1]"
    assert format_ci({"roc_auc": 0.5}, "roc_auc", scale=1) == "0.500"
    assert format_ci({"roc_auc": None}, "roc_auc") == "—"


def test_an_undefined_nan_metric_renders_like_a_missing_one():
    nan = float("nan")
    assert format_ci({"f1": nan, "f1_ci_low": nan, "f1_ci_high": nan}, "f1") == "—"
    assert format_ci({"roc_auc": nan}, "roc_auc", scale=1) == "—"
    # a defined value whose interval could not be computed: the value alone
    assert format_ci({"f1": 0.5, "f1_ci_low": nan, "f1_ci_high": nan}, "f1") == "50.0"


def test_table_puts_paper_figures_beside_ours(metrics):
    table = build_table(metrics)
    keys = list(zip(table.dataset, table.model, strict=True))
    assert keys == [
        ("cnmc", "svm_hog"),
        ("cnmc", "yolov8"),
        ("all_idb2", "resnet50_svm"),
        ("synthetic", "yolov8"),
    ]
    cnmc_yolo = table.iloc[1]
    assert [cnmc_yolo[f"{m} paper"] for m in ("Ac", "P", "R", "F1")] == ["95", "96", "90", "93"]
    assert cnmc_yolo["Ac ours"] == format_ci(metrics[("cnmc", "yolov8")], "accuracy")
    assert cnmc_yolo["Ac ours"].startswith("75.0 [")
    hybrid = table.iloc[2]
    assert hybrid["paper name"] == "Hybrid"
    assert hybrid["P paper"] == str(PAPER_TABLE2[("all_idb2", "resnet50_svm")][1]) == "100"
    assert (table.iloc[3][["Ac paper", "P paper", "R paper", "F1 paper"]] == "—").all()
    assert table["n_test"].tolist() == [8] * 4
    assert {"Specificity", "Bal. acc.", "ROC-AUC"} <= set(table.columns)


def test_write_report(tmp_path, metrics):
    table = build_table(metrics)
    cv = pd.DataFrame({"accuracy_mean": [0.9]}, index=pd.Index(["svm_hog"], name="model"))
    paths = write_report(
        table, tmp_path / "reports", {"5-fold CV": cv}, notes="Data: synthetic, 224 px, CPU."
    )
    assert [p.name for p in paths] == ["table2.md", "table2.csv"]
    markdown = (tmp_path / "reports" / "table2.md").read_text()
    assert markdown.startswith("# Table II")
    assert "Data: synthetic, 224 px, CPU." in markdown
    assert re.search(r"\|\s*cnmc\s*\|\s*yolov8\s*\|\s*YOLOv8\s*\|[^|]+\|\s*95\s*\|", markdown)
    assert "## 5-fold CV" in markdown and "svm_hog" in markdown.split("## 5-fold CV")[1]
    assert "Ac paper" in markdown
    back = pd.read_csv(tmp_path / "reports" / "table2.csv", dtype=str, keep_default_na=False)
    assert back["Ac ours"].tolist() == table["Ac ours"].tolist()
    assert back["F1 paper"].tolist() == table["F1 paper"].tolist()
