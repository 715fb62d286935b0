"""Grad-CAM on the models of the tiny whole-pipeline run (tests/conftest.py: demo_workspace)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from pipeline.evaluate.explain import heatmaps, overlay, write_overlays
from pipeline.io import read_image, write_image
from pipeline.models.base import CamTarget, load_model
from pipeline.models.torchvision_cnn import build_network
from pipeline.predict import main as predict_main

CNN_MODELS = ("resnet50", "densenet121", "resnet50_svm", "yolov8")


def _test_paths(workspace) -> list:
    return sorted((workspace / "artifacts/synthetic/dataset/test").rglob("*.png"))


def _test_images(workspace, n: int = 3) -> tuple[list[np.ndarray], list[str]]:
    paths = _test_paths(workspace)[:n]
    return [read_image(p) for p in paths], [p.stem for p in paths]


@pytest.mark.parametrize("name", CNN_MODELS)
def test_heatmaps_have_image_size_and_unit_range(demo_workspace, name):
    model = load_model(demo_workspace / "models/synthetic" / name)
    images, _ = _test_images(demo_workspace)
    with torch.inference_mode():  # callers' grad mode must not matter
        maps = heatmaps(model, images)
    assert maps.shape == (len(images), *images[0].shape[:2])
    assert maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.isfinite(maps).all()


@pytest.mark.parametrize("name", ("resnet50", "densenet121"))
def test_heatmaps_vary_over_the_cell(demo_workspace, name):
    """At the tiny workspace's 32 px the last feature map is 1x1 (a constant, hence all-zero,
    map); at 128 px (4x4) the gradients must reach it and give a non-constant map.

    About Grad-CAM's plumbing, not a model: the network is re-initialised (a one-epoch model
    may be saturated at P(ALL) 0 or 1, where gradients vanish). An untrained network's ALL
    evidence may be negative everywhere (an all-zero map after Grad-CAM's ReLU); swapping its
    two output rows flips that sign, so one of the two orders must show a localised map."""
    model = load_model(demo_workspace / "models/synthetic" / name)
    torch.manual_seed(0)
    model.network = build_network(model.config, pretrained=False).eval()
    model.image_size = 128  # both networks pool adaptively: any input size works
    images, _ = _test_images(demo_workspace)
    maps = heatmaps(model, images)
    if maps.max() == 0.0:
        last = [m for m in model.network.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.copy_(last.weight[[1, 0]])
            last.bias.copy_(last.bias[[1, 0]])
        maps = heatmaps(model, images)
    assert maps.max() > 0.9 and maps.min() == 0.0


def test_heatmaps_follow_the_input_size(demo_workspace):
    """A size other than the model's input: the heatmap is resized back to it."""
    model = load_model(demo_workspace / "models/synthetic/resnet50")
    images, _ = _test_images(demo_workspace, 2)
    big = [np.ascontiguousarray(np.repeat(np.repeat(im, 2, 0), 3, 1)) for im in images]
    assert heatmaps(model, big).shape == (2, *big[0].shape[:2])


def test_heatmaps_reject_mixed_sizes(demo_workspace):
    model = load_model(demo_workspace / "models/synthetic/resnet50")
    images = [np.zeros((32, 32, 3), np.uint8), np.zeros((40, 32, 3), np.uint8)]
    with pytest.raises(ValueError, match="share one size"):
        heatmaps(model, images)


def test_heatmap_localises_the_evidence():
    """A network whose ALL logit is the mean of a 1x1-conv feature map, on an image bright only
    in its top-right quadrant: the heatmap must be hot there alone (catches transposed or
    flipped maps)."""

    class Brightness(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Conv2d(3, 1, 1)
            torch.nn.init.ones_(self.features.weight)
            torch.nn.init.zeros_(self.features.bias)

        def forward(self, x):
            score = self.features(x).mean((1, 2, 3))
            return torch.stack([score, -score], 1)

    class Fake:
        kind, config = "fake", {"name": "fake"}

        def __init__(self):
            net = Brightness().requires_grad_(False)  # frozen, like `trainable: head`
            self.target = CamTarget(net, [net.features], _to_tensor, positive_index=0)

        def cam_target(self):
            return self.target

    image = np.zeros((8, 8, 3), np.uint8)
    image[:4, 4:] = 255
    (cam,) = heatmaps(Fake(), [image])
    assert cam[:4, 4:].min() > 0.99
    assert cam[4:].max() < 0.01 and cam[:, :4].max() < 0.01


def _to_tensor(images):
    return torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])


def test_overlay_is_rgb_uint8_of_the_image_size():
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    heat = np.zeros((24, 24), np.float32)
    heat[:12] = 1.0
    blended = overlay(image, heat)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert not np.array_equal(blended[:12], blended[12:])  # the hot half is coloured differently
    with pytest.raises(ValueError, match="heatmap shape"):
        overlay(image, heat[:10])


def test_write_overlays_side_by_side(demo_workspace, tmp_path):
    model = load_model(demo_workspace / "models/synthetic/densenet121")
    images, names = _test_images(demo_workspace, 2)
    written = write_overlays(model, images, names, tmp_path / "out")
    assert [p.name for p in written] == [f"{n}.png" for n in names]
    first = read_image(written[0])
    h, w = images[0].shape[:2]
    assert first.shape == (h, 2 * w, 3)
    np.testing.assert_array_equal(first[:, :w], images[0])  # left: the image itself (PNG)
    with pytest.raises(ValueError, match="duplicate"):
        write_overlays(model, images, ["same", "same"], tmp_path / "dup")


def test_svm_hog_has_no_cam_target(demo_workspace, tmp_path):
    model = load_model(demo_workspace / "models/synthetic/svm_hog")
    images, names = _test_images(demo_workspace, 1)
    with pytest.raises(ValueError, match="svm_hog"):
        write_overlays(model, images, names, tmp_path)


def _image_folder(demo_workspace, tmp_path):
    """Two raw smear images (subfolder included) plus one unreadable file."""
    folder = tmp_path / "in"
    raws = sorted((demo_workspace / "artifacts/demo/smear").rglob("*.png"))[:2]
    write_image(folder / "a.png", read_image(raws[0]))
    write_image(folder / "sub" / "b.png", read_image(raws[1]))
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_predict_cli_explain_writes_one_overlay_per_readable_image(
    demo_workspace, tmp_path, capsys
):
    folder = _image_folder(demo_workspace, tmp_path)
    out = tmp_path / "cams"
    model_dir = demo_workspace / "models/synthetic/resnet50"
    assert predict_main([str(model_dir), str(folder), "--explain", str(out)]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a.png",
        "sub/b.png",
    ]
    assert "broken.png" in capsys.readouterr().out  # the error row is still reported


@pytest.mark.parametrize("name", ["svm_hog", "ensemble"])
def test_predict_cli_explain_without_a_feature_map_is_a_clear_error(
    name, demo_workspace, tmp_path, capsys
):
    folder = _image_folder(demo_workspace, tmp_path)
    model_dir = demo_workspace / "models/synthetic" / name
    assert predict_main([str(model_dir), str(folder), "--explain", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and name in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def _run_artifacts(workspace, model: str, path: str) -> list[str]:
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.model = '{model}'",
    )
    return [a.path for a in client.list_artifacts(run.info.run_id, path)]


def test_evaluate_logs_gradcam_artifacts(demo_workspace):
    logged = _run_artifacts(demo_workspace, "resnet50", "gradcam")
    assert len(logged) == min(8, len(_test_paths(demo_workspace))) > 0
    assert all(p.startswith("gradcam/") and p.endswith(".png") for p in logged)
    assert _run_artifacts(demo_workspace, "svm_hog", "gradcam") == []
