import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.preprocess.augment import apply_op, plan_augmentation
from pipeline.schema import AugmentConfig


def frame():
    splits = ["train"] * 50 + ["val"] * 10 + ["test"] * 10
    return pd.DataFrame(
        {"id": [f"i{k}" for k in range(70)], "split": splits, "label": ["all", "hem"] * 35}
    )


def cfg(**kw):
    return OmegaConf.structured(AugmentConfig(**kw))


@pytest.mark.parametrize("multiplier,expected", [(1.0, 0), (1.43, 22), (2.0, 50), (3.5, 125)])
def test_train_grows_by_the_multiplier_and_nothing_else(multiplier, expected):
    plan = plan_augmentation(frame(), cfg(multiplier=multiplier), seed=0)
    assert len(plan) == expected
    assert set(plan["source_id"]) <= {f"i{k}" for k in range(50)}


def test_no_image_gets_the_same_op_twice():
    plan = plan_augmentation(frame(), cfg(multiplier=4.0), seed=0)
    assert not plan.duplicated(["source_id", "op"]).any()


def test_eval_splits_only_when_asked_with_a_warning(caplog):
    plan = plan_augmentation(frame(), cfg(multiplier=2.0, splits=["train", "val", "test"]), seed=0)
    assert len(plan) == 70
    assert "optimistic" in caplog.text


def test_plan_is_seeded():
    a = plan_augmentation(frame(), cfg(), seed=1)
    assert a.equals(plan_augmentation(frame(), cfg(), seed=1))


def test_ops_are_flips_and_right_angle_rotations():
    image = np.arange(2 * 3 * 3).reshape(2, 3, 3).astype(np.uint8)
    assert np.array_equal(apply_op(image, "hflip"), image[:, ::-1])
    assert apply_op(image, "rot90").shape == (3, 2, 3)
    assert np.array_equal(apply_op(apply_op(image, "rot90"), "rot270"), image)
