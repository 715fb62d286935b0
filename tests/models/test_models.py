"""Every classifier behind the one interface: fit, predict, save/load, history, callbacks."""

from __future__ import annotations

import copy
import functools
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from pipeline.config import ConfigError, compose
from pipeline.io import BadInputError, read_image
from pipeline.models import MissingWeightsError, build_model, load_model
from pipeline.train import loop
from tests.conftest import train_context
from tests.models.conftest import make_image_folder, recording_context

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
TINY = {"pretrained": "none", "epochs": 2, "batch_size": 8}
OVERRIDES: dict[str, dict[str, Any]] = {
    "svm_hog": {"hog": {"image_side": 32, "pixels_per_cell": 8}},
    "cell_features_rf": {"n_estimators": 50},
    "cell_features_gb": {"max_iter": 20},
    "resnet50": TINY,
    "resnet50_svm": {**TINY, "epochs": 1, "trainable": "head"},
    "densenet121": {**TINY, "epochs": 1, "trainable": "all", "lr": 0.01, "scheduler": "cosine"},
    "yolov8": TINY,
}
# Every model of conf/model/, so that a model added as the README says is trained here too.
MODELS = sorted(p.stem for p in CONF.glob("*.yaml"))
HISTORY_KEYS = {"epoch", "train_loss", "val_loss", "val_accuracy"}


@functools.cache
def documented_config(name: str) -> dict[str, Any]:
    """`conf/model/<name>.yaml` as Hydra composes it (with its `defaults`), opted in if need be."""
    in_default = (CONF / f"{name}.yaml").exists() and name in compose().models
    cfg = compose([] if in_default else [f"+model@models.{name}={name}"])
    return OmegaConf.to_container(cfg.models[name], resolve=True)


def model_config(name: str, **changes: Any) -> dict[str, Any]:
    """The documented config of `name` with the tiny test overrides merged in. A model added
    as the README says, not listed in OVERRIDES, gets TINY's keys it has: random init (tests
    have no ImageNet weights), two epochs."""
    config = copy.deepcopy(documented_config(name))
    tiny = OVERRIDES.get(name, {key: value for key, value in TINY.items() if key in config})
    for key, value in {**tiny, **changes}.items():
        config[key] = {**(config[key] or {}), **value} if isinstance(value, dict) else value
    return config


def test_a_model_added_as_the_readme_says_is_tested_tiny_and_from_random_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new network on `base/torchvision` inherits `pretrained: imagenet`: without this,
    test_fit_predict_save_load[<it>] failed for want of the weights file."""
    added = {**documented_config("resnet50"), "name": "newnet", "epochs": 15, "batch_size": 64}
    monkeypatch.setattr(sys.modules[__name__], "documented_config", lambda name: added)
    config = model_config("newnet")
    assert (config["pretrained"], config["epochs"], config["batch_size"]) == ("none", 2, 8)


def val_images(data_dir: Path) -> tuple[list[np.ndarray], np.ndarray]:
    paths = sorted((data_dir / "val").glob("*/*.png"))
    return [read_image(p) for p in paths], np.array([p.parent.name == "all" for p in paths])


@pytest.mark.parametrize("name", MODELS)
def test_fit_predict_save_load(
    name: str, image_folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written to the cwd (Ultralytics' runs/...)
    ctx, calls = recording_context(image_folder_dir, tmp_path / "work")
    model = build_model(model_config(name))
    start = time.perf_counter()
    history = model.fit(ctx)
    print(f"{name}: fit {time.perf_counter() - start:.1f}s")

    expected_epochs = model.config.get("epochs", 1)
    assert [row["epoch"] for row in history] == list(range(1, expected_epochs + 1))
    assert all(set(row) >= HISTORY_KEYS for row in history)
    assert [epoch for epoch, _ in calls] == [row["epoch"] for row in history]

    images, _ = val_images(image_folder_dir)
    proba = model.predict_proba(images)
    assert proba.shape == (len(images),)
    assert np.all((proba >= 0) & (proba <= 1))
    # Another size is resized inside predict; the result is still one probability per image.
    assert model.predict_proba([np.zeros((48, 40, 3), np.uint8)]).shape == (1,)

    loaded = load_model(model.save(tmp_path / "saved"))
    assert type(loaded) is type(model)
    assert loaded.image_size == 32
    np.testing.assert_array_equal(loaded.predict_proba(images), proba)
    leftovers = {"runs", "mlruns", "datasets", "wandb", "dvclive"} & {
        p.name for p in tmp_path.iterdir()
    }
    assert not leftovers
    assert not list(image_folder_dir.rglob("*.cache")), "Ultralytics wrote into the data folder"


LEARN = {
    "svm_hog": {},
    "cell_features_rf": {},
    "resnet50": {"epochs": 10, "optimizer": "adam", "lr": 0.001},
    "resnet50_svm": {"epochs": 6, "trainable": "all", "optimizer": "adam", "lr": 0.001},
    "densenet121": {"epochs": 6, "optimizer": "adam", "lr": 0.001},
    "yolov8": {"epochs": 15, "train_args": {"auto_augment": None, "erasing": 0.0}},
}


@pytest.mark.parametrize("name", sorted(LEARN))
def test_every_model_learns_a_separable_skewed_set_with_default_balancing(
    name: str, skewed_folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bright vs dark discs, 3 ALL to 1 healthy: a model that works learns them, and the default
    class balancing keeps it from calling every cell ALL (balanced accuracy 0.5)."""
    monkeypatch.chdir(tmp_path)
    ctx = train_context(data_dir=skewed_folder_dir, work_dir=tmp_path / "work", image_size=32)
    assert ctx.class_balance  # the default
    model = build_model(model_config(name, **LEARN[name]))
    model.fit(ctx)
    images, is_all = val_images(skewed_folder_dir)
    called = model.predict_proba(images) >= 0.5
    recall, specificity = called[is_all].mean(), (~called[~is_all]).mean()
    assert (recall + specificity) / 2 >= 0.9, (name, recall, specificity)


def test_hog_svm_separates_the_classes(image_folder_dir: Path, tmp_path: Path) -> None:
    """Bright vs dark discs are trivially separable: a working HOG+SVM must get them right."""
    model = build_model(model_config("svm_hog", hog={"color": "rgb"}))
    model.fit(train_context(data_dir=image_folder_dir, work_dir=tmp_path, image_size=32))
    images, is_all = val_images(image_folder_dir)
    assert np.mean((model.predict_proba(images) > 0.5) == is_all) >= 0.9


def test_torchvision_is_deterministic_and_resumes(
    image_folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = model_config("resnet50", trainable="last", epochs=2)
    images, _ = val_images(image_folder_dir)

    def run(work: str, on_epoch: Any = None) -> tuple[np.ndarray, list[dict[str, float]]]:
        model = build_model(config)
        ctx = train_context(
            data_dir=image_folder_dir, work_dir=tmp_path / work, image_size=32, on_epoch=on_epoch
        )
        history = model.fit(ctx)
        return model.predict_proba(images), history

    reference, reference_history = run("a")
    again, again_history = run("b")
    np.testing.assert_array_equal(again, reference)
    assert again_history == reference_history

    def crash_after_first_epoch(epoch: int, row: dict[str, float]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill after epoch 1")

    with pytest.raises(KeyboardInterrupt):
        run("c", crash_after_first_epoch)
    trained: list[int] = []
    original = loop.train_one_epoch
    monkeypatch.setattr(
        loop, "train_one_epoch", lambda *a, **k: trained.append(1) or original(*a, **k)
    )
    replayed: list[int] = []
    resumed, resumed_history = run("c", lambda epoch, row: replayed.append(epoch))
    assert len(trained) == 1, "resume must only train the missing epoch"
    assert replayed == [1, 2]
    assert resumed_history == reference_history
    np.testing.assert_array_equal(resumed, reference)


@pytest.mark.parametrize(
    ("name", "file_name"),
    [
        ("resnet50", "resnet50-11ad3fa6.pth"),
        ("densenet121", "densenet121-a639ec97.pth"),
        ("resnet50_svm", "resnet50-11ad3fa6.pth"),
        ("yolov8", "yolov8n-cls.pt"),
    ],
)
def test_missing_pretrained_weights_is_a_clear_error(
    name: str,
    file_name: str,
    image_folder_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    offline: None,
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ALL_DETECT_WEIGHTS", str(tmp_path / "weights"))
    model = build_model(model_config(name, pretrained="imagenet"))
    ctx = train_context(data_dir=image_folder_dir, work_dir=tmp_path / "work", image_size=32)
    with pytest.raises(MissingWeightsError) as error:
        model.fit(ctx)
    message = str(error.value)
    assert file_name in message
    assert str(tmp_path) in message  # the folder to put it in
    assert "https://" in message


@pytest.mark.parametrize(
    ("name", "cached"),
    [
        ("resnet50", "torch/hub/checkpoints/resnet50-11ad3fa6.pth"),
        ("densenet121", "torch/hub/checkpoints/densenet121-a639ec97.pth"),
        ("resnet50_svm", "torch/hub/checkpoints/resnet50-11ad3fa6.pth"),
        ("yolov8", "weights/yolov8n-cls.pt"),
    ],
)
@pytest.mark.parametrize("content", [b"", b"<html>503 Service Unavailable</html>"])
def test_unreadable_pretrained_weights_are_named_with_their_url(
    name: str,
    cached: str,
    content: bytes,
    image_folder_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    offline: None,
) -> None:
    """A cut download or an error page saved under the weights' name: torch and Ultralytics
    each raised their own traceback (EOFError, ValueError, TypeError) naming no file."""
    from pipeline.models.weights import UnreadableWeightsError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ALL_DETECT_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / cached).parent.mkdir(parents=True)
    (tmp_path / cached).write_bytes(content)
    model = build_model(model_config(name, pretrained="imagenet"))
    ctx = train_context(data_dir=image_folder_dir, work_dir=tmp_path / "work", image_size=32)
    with pytest.raises(UnreadableWeightsError) as error:
        model.fit(ctx)
    message = str(error.value)
    assert str(tmp_path / cached) in message and "https://" in message
    assert "\n" not in message


def test_cached_weights_need_no_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    from pipeline.models.weights import torchvision_weights, yolo_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ALL_DETECT_WEIGHTS", str(tmp_path / "weights"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    cached.parent.mkdir(parents=True)
    cached.touch()
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "yolov8s-cls.pt").touch()
    assert torchvision_weights("resnet50").url.endswith(cached.name)
    assert yolo_weights("yolov8s-cls") == tmp_path / "weights" / "yolov8s-cls.pt"


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("resnet50", "optimizer", "rmsprop"),
        ("densenet121", "trainable", "some"),
        ("resnet50", "pretrained", "coco"),
        ("resnet50", "scheduler", "step"),
        ("resnet50_svm", "svm_kernel", "poly"),
        ("svm_hog", "hog", {"color": "hsv"}),
        ("svm_hog", "hog", {"color_hist_bins": -1}),
        ("cell_features_rf", "max_features", "all"),
        ("cell_features_rf", "n_estimators", 0),
        ("cell_features_rf", "min_samples_leaf", None),
        ("cell_features_rf", "image_side", 8),
        ("cell_features_rf", "feature_set", "everything"),
        ("cell_features_gb", "feature_set", "everything"),
        ("cell_features_gb", "max_iter", 0),
        ("cell_features_gb", "learning_rate", 0.0),
        ("cell_features_gb", "learning_rate", "fast"),
        ("cell_features_gb", "l2_regularization", -1.0),
        ("cell_features_gb", "max_leaf_nodes", 1),
        ("cell_features_gb", "image_side", 8),
        ("densenet121", "color_jitter", {"contrast": 0.2}),
        ("resnet50", "color_jitter", {"hue": 0.9}),
        ("resnet50_svm", "color_jitter", "strong"),
        ("yolov8", "pretrained", "yes"),
        ("resnet50", "input_size", 8),
        ("yolov8", "input_size", "big"),
        ("resnet50", "arch", "resnet181"),
        ("densenet121", "dropout", 5),
        ("svm_hog", "C", -1),
        ("resnet50_svm", "C", 0),
        ("yolov8", "optimizer", "foo"),
        ("yolov8", "train_args", "fast"),
    ],
)
def test_bad_config_names_the_key(name: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"models\.{name}\."):
        build_model(model_config(name, **{key: value}))


@pytest.mark.parametrize("name", ["resnet50", "resnet50_svm"])
def test_a_misspelt_key_in_a_networks_own_conf_file_is_refused(name: str) -> None:
    """`schedular: cosine` in conf/model/<name>.yaml passes the config check (the file itself
    says which keys the model has) and was trained with the base's `scheduler: none`."""
    config = {**model_config(name), "schedular": "cosine"}
    with pytest.raises(ConfigError, match=rf"models\.{name}\.schedular: unknown key; .*scheduler"):
        build_model(config)
    build_model(model_config(name))  # every key the shipped files and base set is known


def test_a_network_whose_head_does_not_end_in_a_linear_layer_names_the_key() -> None:
    from pipeline.models.torchvision_cnn import build_network

    config = {**model_config("resnet50"), "arch": "squeezenet1_0"}
    with pytest.raises(ConfigError, match=r"models\.resnet50\.arch: squeezenet1_0's head"):
        build_network(config, pretrained=False)


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0"])
def test_a_sequential_head_ending_in_linear_gets_the_two_class_head_and_gradcam(
    arch: str,
) -> None:
    """The README's `base/torchvision` route works for MobileNet and EfficientNet, whose heads
    are Sequentials: the last Linear (and the Dropout before it) become the new head, and
    Grad-CAM reads their `features`."""
    import torch

    from pipeline.models.torchvision_cnn import TorchvisionClassifier, build_network

    config = {**model_config("resnet50"), "arch": arch, "trainable": "head"}
    network = build_network(config, pretrained=False).eval()
    assert network(torch.zeros(2, 3, 64, 64)).shape == (2, 2)
    assert sum(isinstance(m, torch.nn.Dropout) for m in network.classifier.modules()) == 1
    trainable = {name for name, p in network.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("classifier.") for name in trainable)
    model = build_model(config)
    assert isinstance(model, TorchvisionClassifier)
    model.network, model.image_size = network, 64
    assert model.cam_target().layers == [network.features]


def test_a_network_without_a_head_at_fc_or_classifier_names_the_key() -> None:
    """swin_t's head is at `head`: a ConfigError naming the key, not a ValueError traceback
    from the train stage."""
    from pipeline.models.torchvision_cnn import build_network

    config = {**model_config("resnet50"), "arch": "swin_t"}
    with pytest.raises(ConfigError, match=r"models\.resnet50\.arch: SwinTransformer: no head"):
        build_network(config, pretrained=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_args": {"hsv_ss": 0.0}}, r"train_args: \['hsv_ss'\] are not Ultralytics"),
        ({"variant": "yolov8q-cls"}, "variant: 'yolov8q-cls' is not an Ultralytics classifier"),
    ],
)
def test_yolo_names_what_ultralytics_would_not_take_before_training(
    change: dict, message: str, image_folder_dir: Path, tmp_path: Path, offline: None
) -> None:
    model = build_model(model_config("yolov8", **change))
    with pytest.raises(ConfigError, match=message):
        model.fit(train_context(image_folder_dir, tmp_path / "work"))
    assert not (tmp_path / "work" / "yolo").exists()


@pytest.mark.parametrize(("name", "side"), [("resnet50_svm", 48), ("yolov8", 64)])
def test_input_size_upsamples_the_crop_for_training_and_prediction(
    name: str, side: int, image_folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = build_model(model_config(name, epochs=1, input_size=side))
    model.fit(train_context(data_dir=image_folder_dir, work_dir=tmp_path / "work", image_size=32))
    assert model.image_size == side
    loaded = load_model(model.save(tmp_path / "saved"))
    assert loaded.image_size == side  # prediction resizes to what the network was trained on
    images, _ = val_images(image_folder_dir)
    np.testing.assert_allclose(loaded.predict_proba(images), model.predict_proba(images))
    if name == "resnet50_svm":  # the network itself saw `side` px
        seen: list[tuple[int, ...]] = []
        stem = loaded.network.conv1
        handle = stem.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape))
        loaded.predict_proba(images[:2])
        handle.remove()
        assert seen[0][-2:] == (side, side)


def test_color_jitter_reaches_the_training_transform_only(
    image_folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.models import torchvision_cnn

    jitter = {"brightness": 0.2, "hue": 0.05}
    asked: list[Any] = []
    real = torchvision_cnn.train_transform
    monkeypatch.setattr(
        torchvision_cnn, "train_transform", lambda side, cj=None: asked.append(cj) or real(side, cj)
    )
    model = build_model(model_config("resnet50_svm", epochs=1, color_jitter=jitter))
    model.fit(train_context(data_dir=image_folder_dir, work_dir=tmp_path / "work", image_size=32))
    assert asked == [jitter]


def test_color_histogram_counts_the_cell_not_the_black_background() -> None:
    from pipeline.models.svm_hog import color_histogram, hog_features

    image = np.zeros((20, 20, 3), np.uint8)
    image[5:15, 5:15] = (200, 40, 120)  # the cell; the rest is segmented-away background
    histogram = color_histogram(image, bins=4)
    assert histogram.shape == (12,) and histogram.sum() == pytest.approx(3.0)
    assert histogram[[3, 4, 9]].tolist() == [1.0, 1.0, 1.0]  # all cell pixels, no black
    hog_config = yaml.safe_load((CONF / "svm_hog.yaml").read_text())["hog"]
    plain = hog_features(image, {**hog_config, "image_side": 32})
    with_colour = hog_features(image, {**hog_config, "image_side": 32, "color_hist_bins": 4})
    assert len(with_colour) == len(plain) + 12


def test_cosine_schedule_anneals_to_zero_over_the_epochs() -> None:
    import torch

    from pipeline.models.torchvision_cnn import make_scheduler

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    assert make_scheduler({"scheduler": "none", "epochs": 4}, optimizer) is None
    scheduler = make_scheduler({"scheduler": "cosine", "epochs": 4}, optimizer)
    rates = []
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(0.0)


def test_bad_inputs_are_named(image_folder_dir: Path, tmp_path: Path) -> None:
    model = build_model(model_config("svm_hog"))
    with pytest.raises(BadInputError, match="hem"):
        model.fit(train_context(data_dir=tmp_path, work_dir=tmp_path / "work", image_size=32))
    (tmp_path / "train" / "all").mkdir(parents=True)
    model.fit(train_context(data_dir=image_folder_dir, work_dir=tmp_path / "work", image_size=32))
    with pytest.raises(BadInputError, match="image 1"):
        model.predict_proba([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32)])


def test_yolo_resumes_an_interrupted_run(
    image_folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = model_config("yolov8", epochs=3)
    work = tmp_path / "work"

    def crash(epoch: int, row: dict[str, float]) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_model(config).fit(
            train_context(data_dir=image_folder_dir, work_dir=work, image_size=32, on_epoch=crash)
        )
    crashed = (work / "yolo" / "results.csv").read_text().splitlines()
    relayed: list[int] = []
    history = build_model(config).fit(
        train_context(
            data_dir=image_folder_dir,
            work_dir=work,
            image_size=32,
            on_epoch=lambda e, r: relayed.append(e),
        )
    )
    assert relayed == [1, 2, 3]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    # Epochs 1-2 were not retrained: their rows are the crashed run's, byte for byte.
    assert (work / "yolo" / "results.csv").read_text().splitlines()[:3] == crashed


def test_cell_features_measure_the_cell_and_its_dark_nucleus() -> None:
    """A 40x40 light cell with a 16x20 dark nucleus on black: the areas, their ratio and the
    colours are those drawn, whatever the crop's pixel size."""
    from pipeline.models.cell_features import FEATURE_NAMES, _cell_dark_nucleus, cell_features

    image = np.zeros((64, 64, 3), np.uint8)
    image[10:50, 12:52] = (200, 160, 210)
    image[20:36, 20:40] = (60, 20, 110)
    cell, _, nucleus = _cell_dark_nucleus(image, cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    assert cell.sum() == 40 * 40 and nucleus.sum() == 16 * 20
    named = dict(zip(FEATURE_NAMES, cell_features(image), strict=True))
    assert named["cell_area"] == pytest.approx(1600 / 64**2)
    assert named["nucleus_to_cell_area"] == pytest.approx(320 / 1600)
    assert named["nucleus_rgb_0_mean"] == pytest.approx(60 / 255)
    assert named["nucleus_rgb_0_std"] == pytest.approx(0.0)
    twice = cv2.resize(image, (128, 128), interpolation=cv2.INTER_NEAREST)
    again = dict(zip(FEATURE_NAMES, cell_features(twice), strict=True))
    for key in ("cell_area", "nucleus_area", "nucleus_to_cell_area", "cell_solidity"):
        assert again[key] == pytest.approx(named[key], rel=0.02), key


def test_cell_features_image_side_measures_every_crop_at_one_side() -> None:
    """image_side 64 measures a crop stored at 128 px as the 64 px crop it was made from
    (the area mean of 2x2 equal pixels is that pixel); null measures it as it is."""
    from pipeline.models.cell_features import cell_features

    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8)
    image[8:56, 8:56] = rng.integers(120, 230, (48, 48, 3), dtype=np.uint8)
    image[20:40, 18:44] = rng.integers(20, 90, (20, 26, 3), dtype=np.uint8)
    twice = cv2.resize(image, (128, 128), interpolation=cv2.INTER_NEAREST)
    at_64 = build_model(model_config("cell_features_rf", image_side=64))
    np.testing.assert_array_equal(at_64.features(twice), cell_features(image))
    as_stored = build_model(model_config("cell_features_rf", image_side=None))
    np.testing.assert_array_equal(as_stored.features(twice), cell_features(twice))
    assert not np.array_equal(cell_features(twice), cell_features(image))  # texture differs


@pytest.mark.parametrize("feature_set", ["basic", "extended"])
@pytest.mark.parametrize(
    "image",
    [np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 128, np.uint8)],
    ids=["all black", "flat grey"],
)
def test_cell_features_are_finite_where_segmentation_left_nothing(
    image: np.ndarray, feature_set: str
) -> None:
    from pipeline.models.cell_features import FEATURE_SETS, cell_features

    values = cell_features(image, feature_set)
    assert values.shape == (len(FEATURE_SETS[feature_set]),)
    assert np.isfinite(values).all()


def _drawn_cell(nucleus_rows: slice = slice(20, 36)) -> np.ndarray:
    image = np.zeros((64, 64, 3), np.uint8)
    image[10:50, 12:52] = (200, 160, 210)  # cytoplasm
    image[nucleus_rows, 20:40] = (60, 20, 110)  # nucleus
    return image


def test_extended_cell_features_keep_the_basic_ones_and_measure_what_was_drawn() -> None:
    """The extended set starts with the basic 43; the cytoplasm (cell minus nucleus) and the
    Lab means are the drawn colours'; a flat nucleus has one LBP code and no grey spread."""
    from pipeline.models.cell_features import EXTENDED_NAMES, FEATURE_NAMES, cell_features

    image = _drawn_cell()
    basic, extended = cell_features(image), cell_features(image, "extended")
    np.testing.assert_array_equal(extended[: len(FEATURE_NAMES)], basic)
    named = dict(zip(EXTENDED_NAMES, extended, strict=True))
    assert named["cytoplasm_rgb_0_mean"] == pytest.approx(200 / 255)
    assert named["cytoplasm_rgb_2_std"] == pytest.approx(0.0)
    lab = cv2.cvtColor(np.array([[(200, 160, 210), (60, 20, 110)]], np.uint8), cv2.COLOR_RGB2LAB)
    assert named["cytoplasm_lab_L_mean"] == pytest.approx(lab[0, 0, 0] / 255)
    assert named["nucleus_lab_b_mean"] == pytest.approx(lab[0, 1, 2] / 255)
    assert named["nucleus_gray_p10"] == named["nucleus_gray_p90"]
    assert named["nucleus_gray_entropy"] == pytest.approx(0.0)
    for points, radius in ((8, 1), (16, 2)):
        shares = [named[f"nucleus_lbp{points}r{radius}_{code}"] for code in range(points + 2)]
        assert sum(shares) == pytest.approx(1.0)
    assert named["nucleus_lobes"] == 1
    assert named["nucleus_convex_perimeter_ratio"] == pytest.approx(1.0, abs=0.05)


def test_extended_cell_features_see_chromatin_texture_lobes_and_clefts() -> None:
    """Speckled chromatin spreads the grey levels and the LBP codes that a flat nucleus
    concentrates; two dark blobs are two lobes; a notch makes the outline longer than its
    convex hull's."""
    from pipeline.models.cell_features import EXTENDED_NAMES, cell_features

    def named(image: np.ndarray) -> dict[str, float]:
        return dict(zip(EXTENDED_NAMES, cell_features(image, "extended"), strict=True))

    flat = named(_drawn_cell())
    speckled_image = _drawn_cell()
    speckled_image[20:36:2, 20:40:2] = (90, 50, 140)
    speckled = named(speckled_image)
    assert speckled["nucleus_gray_entropy"] > flat["nucleus_gray_entropy"]
    lbp = [f"nucleus_lbp8r1_{code}" for code in range(10)]
    assert max(speckled[k] for k in lbp) < max(flat[k] for k in lbp)

    two_lobes = _drawn_cell()
    two_lobes[27:30, 20:40] = (200, 160, 210)  # cytoplasm splits the nucleus in two
    assert named(two_lobes)["nucleus_lobes"] == 2

    cleft = _drawn_cell()
    cleft[20:32, 28:32] = (200, 160, 210)  # a deep notch from the top edge
    assert named(cleft)["nucleus_convex_perimeter_ratio"] > 1.1


@pytest.mark.parametrize("name", ["cell_features_rf", "cell_features_gb"])
def test_cell_features_models_fit_the_extended_set_and_reload(
    name: str, image_folder_dir: Path, tmp_path: Path
) -> None:
    """Forest and boosting see the extended set's every measure, save it and predict the same
    after a reload; a model saved before feature_set existed measures the basic set."""
    from pipeline.models.cell_features import EXTENDED_NAMES, cell_features

    model = build_model(model_config(name, feature_set="extended"))
    model.fit(train_context(data_dir=image_folder_dir, work_dir=tmp_path / "work"))
    assert model.pipeline[-1].n_features_in_ == len(EXTENDED_NAMES)
    images, _ = val_images(image_folder_dir)
    model.save(tmp_path / "model")
    np.testing.assert_array_equal(load_model(tmp_path / "model").predict_proba(images),
                                  model.predict_proba(images))  # fmt: skip
    legacy = model_config(name)
    del legacy["feature_set"]
    np.testing.assert_array_equal(build_model(legacy).features(images[0]), cell_features(images[0]))


def test_boosting_holds_its_openmp_threads_to_train_threads(
    image_folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Histogram boosting threads through OpenMP, not n_jobs: its fit runs inside an OpenMP
    limit of train.threads, as every other model keeps to it."""
    import contextlib

    import threadpoolctl
    from sklearn.ensemble import HistGradientBoostingClassifier

    limits: list[tuple[int | None, str]] = []
    inside: list[bool] = []

    @contextlib.contextmanager
    def recording_limits(limits_arg=None, user_api=None):
        limits.append((limits_arg, user_api))
        inside.append(True)
        yield
        inside.append(False)

    monkeypatch.setattr(
        threadpoolctl,
        "threadpool_limits",
        lambda limits=None, user_api=None: recording_limits(limits, user_api),
    )
    fitted_inside: list[bool] = []
    original_fit = HistGradientBoostingClassifier.fit

    def fit(self, *args, **kwargs):
        fitted_inside.append(inside[-1])
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(HistGradientBoostingClassifier, "fit", fit)
    model = build_model(model_config("cell_features_gb"))
    model.fit(train_context(data_dir=image_folder_dir, work_dir=tmp_path / "work", threads=1))
    assert limits == [(1, "openmp")]
    assert fitted_inside == [True]


def test_yolo_marks_the_last_of_tied_epochs_as_kept() -> None:
    """Ultralytics rewrites best.pt at every epoch tying the best fitness (top-1 + top-5 / 2)."""
    from pipeline.models.yolo import _mark_kept
    from pipeline.train.history import KEPT, selected_epoch

    history = [
        {"epoch": 1, "val_accuracy": 0.80, "val_loss": 0.5},
        {"epoch": 2, "val_accuracy": 0.92, "val_loss": 0.4},
        {"epoch": 3, "val_accuracy": 0.85, "val_loss": 0.3},
        {"epoch": 4, "val_accuracy": 0.92, "val_loss": 0.2},
    ]
    marked = _mark_kept(history)
    assert [row.get(KEPT) for row in marked] == [None, None, None, 1.0]
    assert selected_epoch(marked, "val_accuracy")["epoch"] == 4
    assert _mark_kept([]) == []


def test_yolo_stopped_early_returns_the_epochs_it_ran(image_folder_dir: Path, tmp_path: Path):
    """Ultralytics re-validates best.pt after an early stop too, with no loss: not an epoch."""
    relayed: list[int] = []
    ctx = train_context(
        image_folder_dir, tmp_path / "work", image_size=32, early_stopping_patience=1,
        on_epoch=lambda epoch, row: relayed.append(epoch),
    )  # fmt: skip
    history = build_model(model_config("yolov8", epochs=8, lr=0.5)).fit(ctx)
    assert len(history) < 8, "the run was meant to stop early"
    assert relayed == [int(row["epoch"]) for row in history]


def test_yolo_never_resumes_a_checkpoint_of_other_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed run's checkpoint under the same data path, after a re-split: start afresh."""
    from pipeline.models.yolo import YoloClassifier

    data = make_image_folder(tmp_path / "cells")

    def kill_after_first_epoch(epoch: int, row: dict[str, float]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill after epoch 1")

    def fit(on_epoch: Any) -> None:
        ctx = train_context(data, tmp_path / "work", image_size=32, on_epoch=on_epoch)
        build_model(model_config("yolov8", epochs=2)).fit(ctx)

    with pytest.raises(KeyboardInterrupt):
        fit(kill_after_first_epoch)
    for path in sorted((data / "train" / "all").glob("*.png"))[:3]:
        path.unlink()  # the same folder now holds other training images
    resumable = YoloClassifier._resumable
    answers: list[bool] = []
    monkeypatch.setattr(
        YoloClassifier, "_resumable",
        staticmethod(lambda *args: answers.append(resumable(*args)) or answers[-1]),
    )  # fmt: skip
    fit(None)
    assert answers == [False]


def test_yolo_starts_afresh_from_a_torn_checkpoint(tmp_path: Path) -> None:
    """Ultralytics writes last.pt in place: a kill mid-write leaves it torn. The rerun must
    train from scratch (as the torchvision loop does), not fail with a traceback every time."""
    data = make_image_folder(tmp_path / "cells")

    def kill_after_first_epoch(epoch: int, row: dict[str, float]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill after epoch 1")

    def fit(on_epoch: Any) -> list[dict[str, float]]:
        ctx = train_context(data, tmp_path / "work", image_size=32, on_epoch=on_epoch)
        return build_model(model_config("yolov8", epochs=2)).fit(ctx)

    with pytest.raises(KeyboardInterrupt):
        fit(kill_after_first_epoch)
    (last,) = (tmp_path / "work").rglob("last.pt")
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    history = fit(None)
    assert [int(row["epoch"]) for row in history] == [1, 2]


def test_a_yolo_model_folder_without_its_weights_is_named_and_nothing_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a name that is not a file, Ultralytics looks it up among its GitHub release
    assets (a network call that can hang behind a firewall) before it fails."""
    import json

    import ultralytics

    from pipeline.io import MalformedFileError
    from pipeline.paths import MODEL_CARD

    config = model_config("yolov8")
    card = {"kind": config["kind"], "config": config, "image_size": 32}
    (tmp_path / MODEL_CARD).write_text(json.dumps(card))
    opened: list[str] = []
    monkeypatch.setattr(ultralytics, "YOLO", lambda source, *a, **k: opened.append(source))
    with pytest.raises(MalformedFileError, match="best.pt: no such file"):
        load_model(tmp_path)
    assert opened == []
