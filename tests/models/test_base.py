"""Fitting: classes and subjects weigh what `train.class_balance` / `subject_balance` say; an
SVM's Platt scaling copes with a tiny class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.models.base import PLATT_FOLDS, fit_pipeline, platt_scaled, training_weights
from tests.conftest import train_context, write_folder_manifest
from tests.models.conftest import make_image_folder
from tests.models.test_models import model_config

# Fold 0's skew in small: one healthy subject with most of the healthy cells, two tiny ones.
TARGETS = np.array([0] * 9 + [1] * 12)
GROUPS = ["a"] * 5 + ["b"] * 4 + ["H1"] * 10 + ["H2"] * 1 + ["H3"] * 1


def totals(weights: np.ndarray, by: list) -> dict:
    return pd.Series(weights).groupby(by).sum().to_dict()


def test_subject_balance_weighs_every_subject_of_a_class_alike_and_the_classes_alike() -> None:
    weights = training_weights(TARGETS, GROUPS, class_balance=True)
    per_class = totals(weights, list(TARGETS))
    assert per_class[0] == pytest.approx(per_class[1]) == pytest.approx(len(TARGETS) / 2)
    per_subject = totals(weights, GROUPS)
    assert per_subject["a"] == pytest.approx(per_subject["b"])
    assert per_subject["H1"] == pytest.approx(per_subject["H2"]) == pytest.approx(per_subject["H3"])


def test_subject_balance_without_class_balance_keeps_each_classs_share_of_the_cells() -> None:
    """Subjects of a class weigh alike, and the classes weigh as their cells do (as with the
    CNNs' subject-weighted drawing): 2 ALL against 3 healthy subjects must not tilt them."""
    weights = training_weights(TARGETS, GROUPS, class_balance=False)
    per_class = totals(weights, list(TARGETS))
    assert per_class[0] == pytest.approx(9) and per_class[1] == pytest.approx(12)
    per_subject = totals(weights, GROUPS)
    assert per_subject["a"] == pytest.approx(per_subject["b"]) == pytest.approx(4.5)
    assert per_subject["H1"] == pytest.approx(per_subject["H2"]) == pytest.approx(4)


def test_without_groups_weights_are_scikit_learns_class_balance_or_none() -> None:
    from sklearn.utils.class_weight import compute_sample_weight

    assert training_weights(TARGETS, None, class_balance=False) is None
    np.testing.assert_array_equal(
        training_weights(TARGETS, None, class_balance=True),
        compute_sample_weight("balanced", TARGETS),
    )


@pytest.mark.parametrize("name", ["cell_features_rf", "svm_hog"])
def test_feature_models_fit_with_the_subject_weights(
    name: str, named_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.pipeline import Pipeline

    group_of = write_folder_manifest(named_folder)
    seen: dict[str, np.ndarray] = {}
    fit = Pipeline.fit

    def spy(self, x, y, **kwargs):
        seen.update(targets=np.asarray(y), **kwargs)
        return fit(self, x, y, **kwargs)

    monkeypatch.setattr(Pipeline, "fit", spy)
    ctx = train_context(named_folder, tmp_path / "work", subject_balance=True)
    build_model(model_config(name)).fit(ctx)
    [weights] = [value for key, value in seen.items() if key.endswith("__sample_weight")]
    paths = sorted((named_folder / "train").glob("*/*.png"))
    groups = [group_of[p.stem] for p in paths]  # ImageFolder's order: class, then file name
    np.testing.assert_allclose(weights, training_weights(seen["targets"], groups, True))
    class_weights = training_weights(seen["targets"], None, True)
    assert not np.allclose(weights, class_weights)  # subjects of unequal size


def test_an_svm_with_fewer_training_images_of_a_class_than_platt_folds_still_fits(
    tmp_path: Path,
) -> None:
    """A tiny dataset: Platt scaling takes as many folds as the smallest class allows."""
    fewest = PLATT_FOLDS - 2
    data = make_image_folder(tmp_path / "cells", counts={"all": 12, "hem": fewest})
    model = build_model(model_config("svm_hog"))
    model.fit(train_context(data, tmp_path / "work"))
    assert model.pipeline.steps[-1][1].cv == fewest
    assert model.predict_proba(np.zeros((2, 32, 32, 3), dtype=np.uint8)).shape == (2,)


def _platt_svm(features: np.ndarray, targets: np.ndarray) -> object:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    svm = make_pipeline(StandardScaler(), platt_scaled(LinearSVC(dual="auto", random_state=0)))
    fit_pipeline(svm, features, targets, True, None, "svm_hog")
    return svm


def test_an_svm_whose_platt_scaling_inverts_its_calls_is_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pure noise, 20 images, 500 features: the SVM fits its training images, its out-of-fold
    decisions run against the labels, and Platt's sigmoid turns every training call around."""
    features = np.random.default_rng(2).normal(size=(20, 500))
    targets = np.repeat([0, 1], 10)
    with caplog.at_level("WARNING", logger="pipeline.models.base"):
        svm = _platt_svm(features, targets)
    assert (svm.predict_proba(features).argmax(1) != targets).all()  # the failure warned of
    assert "svm_hog: Platt scaling found the SVM's out-of-fold decisions" in caplog.text


def test_an_svm_with_a_signal_is_not_warned(caplog: pytest.LogCaptureFixture) -> None:
    features = np.random.default_rng(0).normal(size=(40, 5))
    targets = (features[:, 0] > 0).astype(int)
    with caplog.at_level("WARNING", logger="pipeline.models.base"):
        _platt_svm(features, targets)
    assert "Platt scaling" not in caplog.text


def test_an_svm_with_one_training_image_of_a_class_is_named(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "cells", counts={"all": 12, "hem": 1})
    model = build_model(model_config("svm_hog"))
    with pytest.raises(PipelineError, match="svm_hog: the training split has 1 'hem' image"):
        model.fit(train_context(data, tmp_path / "work"))


def test_yolo_refuses_subject_balance_and_names_the_kinds_that_can(
    named_folder: Path, tmp_path: Path
) -> None:
    """Ultralytics' trainer draws its own batches: it cannot weigh a subject."""
    ctx = train_context(named_folder, tmp_path / "work", subject_balance=True)
    with pytest.raises(ConfigError, match="not supported by model 'yolov8'.*'torchvision'"):
        build_model(model_config("yolov8")).fit(ctx)


def test_subject_sampling_weights_even_out_subjects_within_each_class_and_keep_class_shares():
    from pipeline.models.torchvision_cnn import subject_sampling_weights

    weights = subject_sampling_weights(TARGETS, GROUPS)
    per_class = totals(weights, list(TARGETS))
    assert per_class[0] == pytest.approx(9) and per_class[1] == pytest.approx(12)
    per_subject = totals(weights, GROUPS)
    assert per_subject["a"] == pytest.approx(per_subject["b"]) == pytest.approx(4.5)
    assert per_subject["H1"] == pytest.approx(per_subject["H2"]) == pytest.approx(4)


@pytest.mark.parametrize("name", ["resnet50", "resnet50_svm"])
def test_torchvision_models_draw_training_images_by_subject(
    name: str, named_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training loader draws with `subject_sampling_weights`, in ImageFolder's order;
    resnet50_svm's SVM also fits with the subject weights."""
    from sklearn.pipeline import Pipeline

    from pipeline.models import torchvision_cnn
    from pipeline.models.torchvision_cnn import subject_sampling_weights

    group_of = write_folder_manifest(named_folder)
    drawn: list = []
    make_loader = torchvision_cnn.make_loader

    def spy_loader(*args, weights=None, **kwargs):
        drawn.append(weights)
        return make_loader(*args, weights=weights, **kwargs)

    fitted: dict = {}
    fit = Pipeline.fit

    def spy_fit(self, x, y, **kwargs):
        fitted.update(targets=np.asarray(y), **kwargs)
        return fit(self, x, y, **kwargs)

    monkeypatch.setattr(torchvision_cnn, "make_loader", spy_loader)
    monkeypatch.setattr(Pipeline, "fit", spy_fit)
    ctx = train_context(named_folder, tmp_path / "work", subject_balance=True)
    build_model(model_config(name)).fit(ctx)
    paths = sorted((named_folder / "train").glob("*/*.png"))
    targets = [int(p.parent.name == "hem") for p in paths]  # ImageFolder: all = 0, hem = 1
    groups = [group_of[p.stem] for p in paths]
    [weights] = [w for w in drawn if w is not None]  # the training loader's, the val's is None
    np.testing.assert_allclose(weights, subject_sampling_weights(targets, groups))
    if name == "resnet50_svm":
        [svm_weights] = [v for k, v in fitted.items() if k.endswith("__sample_weight")]
        np.testing.assert_allclose(svm_weights, training_weights(fitted["targets"], groups, True))


def test_subject_balance_refuses_ddp_ranks_before_training(named_folder: Path, tmp_path: Path):
    ctx = train_context(
        named_folder, tmp_path / "work", subject_balance=True, strategy="ddp", processes=2
    )
    with pytest.raises(ConfigError, match="subject_balance: 2 DDP ranks"):
        build_model(model_config("resnet50")).fit(ctx)


def test_a_model_kind_added_later_refuses_subject_balance_before_its_fit_runs(
    named_folder: Path, tmp_path: Path
) -> None:
    """A new kind that does not declare `weighs_subjects` cannot silently train unweighted."""
    from pipeline.models.base import Classifier

    calls: list[str] = []

    class Unweighted(Classifier):
        kind = ""  # not registered: the test must not leak a model kind into the registry

        def _fit(self, ctx):
            calls.append("fit")
            return []

        def predict_proba(self, images):
            return np.zeros(len(images))

        def _save_weights(self, directory: Path) -> None: ...

        def _load_weights(self, directory: Path) -> None: ...

    model = Unweighted({"name": "unweighted"})
    ctx = train_context(named_folder, tmp_path / "work", subject_balance=True)
    with pytest.raises(ConfigError, match="not supported by model 'unweighted'"):
        model.fit(ctx)
    assert calls == []
    assert model.fit(train_context(named_folder, tmp_path / "work")) == [] and calls == ["fit"]
    type(model).weighs_subjects = True
    model.fit(ctx)
    assert calls == ["fit", "fit"]


def test_a_model_kind_missing_a_required_method_is_named_not_a_traceback() -> None:
    from pipeline.models.base import Classifier
    from pipeline.models.feature_model import FeatureClassifier

    class Incomplete(FeatureClassifier):
        kind = "incomplete_for_test"
        model_file = "x.joblib"
        feature_name = "x"

        def features(self, image):
            return np.zeros(1)

    try:
        with pytest.raises(
            PipelineError,
            match=r"'incomplete_for_test' .*Incomplete\) does not "
            r"implement make_pipeline: see README",
        ):
            build_model({"name": "x", "kind": "incomplete_for_test"})
    finally:
        del Classifier.registry[Incomplete.kind]


def test_an_unknown_kind_says_where_a_new_kind_is_registered() -> None:
    """Forgetting the import in pipeline/models/__init__.py (README, Add a model) left only
    'unknown model kind', which reads like a typo in the YAML."""
    with pytest.raises(ConfigError, match=r"unknown model kind 'nope'.*pipeline/models/__init__"):
        build_model({"name": "x", "kind": "nope"})
