import numpy as np
import pandas as pd
import pytest

from pipeline.preprocess.augment import apply_op, plan_augmentation
from tests.conftest import section


def frame():
    splits = ["train"] * 50 + ["val"] * 10 + ["test"] * 10
    return pd.DataFrame(
        {"id": [f"i{k}" for k in range(70)], "split": splits, "label": ["all", "hem"] * 35}
    )


def cfg(**kw):
    return section("augment", **kw)


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


def test_materialise_writes_originals_and_named_transformed_copies(tmp_path):
    from pipeline.io import read_image, write_image
    from pipeline.preprocess.augment import augmented_table, materialise

    rng = np.random.default_rng(0)
    data = frame().iloc[:6].assign(split=["train"] * 4 + ["val"] * 2)
    paths = []
    for image_id in data["id"]:
        paths.append(tmp_path / "src" / f"{image_id}.png")
        write_image(paths[-1], rng.integers(0, 255, (4, 6, 3), dtype=np.uint8))
    data["path"] = [str(p) for p in paths]
    plan = plan_augmentation(data, cfg(multiplier=8.0), seed=0)  # > 6: some ops repeat
    table = augmented_table(data, plan)
    assert len(table) == 6 + len(plan) and table["id"].is_unique
    written = materialise(table, tmp_path / "out", desc="test")
    for row in written.itertuples():
        image = read_image(row.path)
        assert row.path == str(tmp_path / "out" / row.split / row.label / f"{row.id}.png")
        source = read_image(data.set_index("id").at[row.augmented_from or row.id, "path"])
        expected = apply_op(source, row.op) if row.op else source
        assert np.array_equal(image, expected)
    assert (tmp_path / "out" / "val" / "hem").is_dir()


def test_a_copy_named_like_an_original_gets_an_id_of_its_own():
    """`Malignant/a.jpg` and `Malignant/a/hflip.jpg` are ingested as `Malignant__a` and
    `Malignant__a__hflip`: the first's hflip copy must not take the second's id."""
    from pipeline.preprocess.augment import augmented_table

    data = pd.DataFrame({"id": ["a", "a__hflip"], "split": "train", "label": "all"})
    plan = pd.DataFrame({"source_id": ["a", "a__hflip"], "op": ["hflip", "hflip"]})
    table = augmented_table(data, plan)
    assert table["id"].is_unique
    copy = table[table["augmented_from"] == "a"]["id"].item()
    assert copy.startswith("a__hflip_") and copy != "a__hflip"
    assert "a__hflip__hflip" in set(table["id"])  # no clash: named as ever


def test_a_split_table_missing_a_new_crop_is_stale():
    from pipeline.preprocess.augment import StaleInputError, require_images_of

    table = pd.DataFrame({"id": ["a", "b"]})
    require_images_of(table, pd.DataFrame({"id": ["b", "a"]}), "split.csv")
    with pytest.raises(StaleInputError, match="misses 1 new one"):
        require_images_of(table, pd.DataFrame({"id": ["a", "b", "c"]}), "split.csv")
    with pytest.raises(StaleInputError, match="lists 1 image"):
        require_images_of(table, pd.DataFrame({"id": ["a"]}), "split.csv")
