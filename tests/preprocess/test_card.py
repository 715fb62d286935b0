"""The preparation card each data stage writes beside its images."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf

from pipeline.io import MalformedFileError
from pipeline.paths import PREPROCESS_CARD
from pipeline.preprocess.card import (
    MissingCardError,
    read_card,
    segmentation_card,
    warn_on_resize,
    with_crop,
    write_card,
)
from tests.conftest import section


@pytest.mark.parametrize(
    ("dataset_segments", "method", "segments"),
    [(True, "otsu", True), (True, "none", False), (False, "otsu", False)],
)
def test_the_segmentation_card_says_whether_images_were_segmented(
    dataset_segments, method, segments
):
    segment_cfg = section("segment", method=method)
    card = segmentation_card(OmegaConf.create({"segment": dataset_segments}), segment_cfg)
    assert card["segment"] is segments
    assert card["segment_config"]["method"] == method


def test_a_card_round_trips_with_its_crop_settings(tmp_path):
    crop_cfg = section("crop", margin=0.2)
    card = with_crop({"segment": False, "segment_config": {"method": "none"}}, crop_cfg)
    write_card(tmp_path, card)
    assert read_card(tmp_path) == card
    assert read_card(tmp_path)["crop_config"]["margin"] == 0.2


def test_a_folder_without_a_card_is_named(tmp_path):
    with pytest.raises(MissingCardError, match=f"{tmp_path}: no {PREPROCESS_CARD}.*dvc repro"):
        read_card(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a preparation card, got list"),
        ('{"segment": true}', "no segment_config, crop_config"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_damaged_card_is_named(tmp_path, text, message):
    (tmp_path / PREPROCESS_CARD).write_text(text)
    with pytest.raises(MalformedFileError, match=message):
        read_card(tmp_path)


def test_training_at_another_side_than_the_crops_is_warned(tmp_path, caplog):
    card = {"crop_config": {"size": 32}}
    with caplog.at_level(logging.WARNING):
        assert not warn_on_resize(card, 32, tmp_path)
        assert not caplog.records
        assert warn_on_resize(card, 64, tmp_path)
    assert f"images in {tmp_path} were cropped at 32 px" in caplog.text
    assert "resampled to 64 px" in caplog.text
