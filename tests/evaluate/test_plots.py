import numpy as np
import pandas as pd
from PIL import Image

from pipeline.evaluate.plots import write_plot_data

Y = np.array([1, 1, 1, 0, 0, 0, 0])
P = np.array([0.9, 0.6, 0.2, 0.7, 0.4, 0.3, 0.1])


def test_plot_files_have_dvc_columns(tmp_path):
    history = [{"train_loss": 1 / e, "val_accuracy": 0.5 + e / 20} for e in range(1, 5)]
    written = write_plot_data(tmp_path / "plots", Y, P, history)
    names = sorted(p.name for p in written)
    assert names == sorted(
        ["confusion.csv", "roc.csv", "history.csv", "confusion.png", "roc.png", "curves.png"]
    )
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)

    confusion = pd.read_csv(tmp_path / "plots" / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    assert len(confusion) == len(Y)
    pairs = list(zip(confusion.actual, confusion.predicted, strict=True))
    assert pairs.count(("all", "all")) == 2 and pairs.count(("hem", "all")) == 1
    assert pairs.count(("all", "hem")) == 1 and pairs.count(("hem", "hem")) == 3

    roc = pd.read_csv(tmp_path / "plots" / "roc.csv")
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    assert np.isfinite(roc.to_numpy()).all()
    assert roc.fpr.is_monotonic_increasing and roc.tpr.is_monotonic_increasing
    assert (roc.iloc[-1][["fpr", "tpr"]] == 1).all()

    curves = pd.read_csv(tmp_path / "plots" / "history.csv")
    assert list(curves.columns) == ["epoch", "train_loss", "val_accuracy"]
    assert curves.epoch.tolist() == [1, 2, 3, 4]
    with Image.open(tmp_path / "plots" / "curves.png") as image:
        assert image.format == "PNG" and image.width > 100


def test_without_history_no_curves(tmp_path):
    written = write_plot_data(tmp_path, Y, P, history=None)
    assert {p.name for p in written} == {"confusion.csv", "roc.csv", "confusion.png", "roc.png"}
    assert not (tmp_path / "history.csv").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp folders
