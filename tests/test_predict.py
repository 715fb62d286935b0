import shutil

import pandas as pd

from pipeline import paths
from pipeline.predict import main


def test_predict_folder_reports_a_corrupt_file_and_classifies_the_rest(
    demo_workspace, tmp_path, capsys
):
    raw = sorted((demo_workspace / "artifacts" / "demo" / "smear").glob("*.png"))[:3]
    for image in raw:
        shutil.copy(image, tmp_path / image.name)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "predictions.csv"
    model = demo_workspace / paths.model_dir("synthetic", "resnet50")
    assert main([str(model), str(tmp_path), "--output", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 4
    broken = table[table["path"].str.endswith("broken.png")].iloc[0]
    assert "broken.png" in broken["error"] and broken["prediction"] == ""
    good = table[table["error"] == ""]
    assert set(good["prediction"]) <= {"all", "hem"}
    assert good["probability"].astype(float).between(0.5, 1).all()
    assert "could not be read" in capsys.readouterr().err


def test_predict_single_image_prints_class_and_probability(demo_workspace, capsys):
    image = sorted((demo_workspace / "artifacts" / "demo" / "smear").glob("*.png"))[0]
    model = demo_workspace / paths.model_dir("synthetic", "svm_hog")
    assert main([str(model), str(image)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(image)) and ("all" in line or "hem" in line) and "p=" in line


def test_predict_unknown_model_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path)]) == 1
    assert "model folder not found" in capsys.readouterr().err
