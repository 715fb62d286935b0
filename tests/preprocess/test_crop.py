import numpy as np

from pipeline.preprocess.crop import crop_and_resize, crop_box
from tests.conftest import section


def cell_on_black(side=100, box=(30, 60, 20, 80)):
    image = np.zeros((side, side, 3), np.uint8)
    top, bottom, left, right = box
    image[top:bottom, left:right] = (200, 120, 180)
    return image


def cfg(**kw):
    return section("crop", **kw)


def test_bbox_finds_the_cell_with_margin():
    assert crop_box(cell_on_black(), cfg(margin=0.0)) == (30, 60, 20, 80)
    top, bottom, left, right = crop_box(cell_on_black(), cfg(margin=0.1))
    assert (top, bottom, left, right) == (27, 63, 14, 86)


def test_fraction_rule_is_the_papers_central_crop():
    assert crop_box(cell_on_black(), cfg(rule="fraction", fraction=[0.2, 0.8])) == (20, 80, 20, 80)


def test_output_is_square_at_size_and_keeps_aspect():
    out = crop_and_resize(cell_on_black(), cfg(size=64, margin=0.0))
    assert out.shape == (64, 64, 3)
    # 30x60 box padded to 60x60: the cell fills the middle half vertically
    rows = np.flatnonzero(out.max(axis=(1, 2)) > 10)
    assert 14 <= rows[0] <= 18 and 46 <= rows[-1] <= 50


def test_all_black_image_is_kept_whole():
    out = crop_and_resize(np.zeros((40, 50, 3), np.uint8), cfg(size=32))
    assert out.shape == (32, 32, 3) and out.max() == 0


def test_a_narrow_fraction_of_a_narrow_image_keeps_at_least_one_pixel_each_way():
    narrow = np.full((40, 12, 3), 150, np.uint8)
    crop = cfg(rule="fraction", fraction=[0.5, 0.55], size=16)
    top, bottom, left, right = crop_box(narrow, crop)
    assert bottom > top and right > left
    assert crop_and_resize(narrow, crop).shape == (16, 16, 3)


def test_a_cell_bright_in_one_channel_only_is_foreground():
    image = np.zeros((100, 100, 3), np.uint8)
    image[30:60, 20:80, 2] = 25  # max over channels 25 > 10, mean 8.3 < 10
    assert crop_box(image, cfg(margin=0.0, threshold=10)) == (30, 60, 20, 80)


def test_shrinking_averages_every_pixel_not_a_sample_of_them():
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3)).astype(np.uint8)
    out = crop_and_resize(noise, cfg(rule="fraction", fraction=[0.0, 1.0], size=64))
    # area averaging of 4x4 blocks: a quarter of the noise's spread (a 2x2 sample: half)
    assert out.std() < noise.std() / 3


def test_the_footprint_holds_every_crop_pixel_the_mask_contributes_to():
    from pipeline.preprocess.crop import crop_footprint

    image = np.zeros((40, 40, 3), np.uint8)
    image[10:30, 10:30] = 100
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True
    changed = image.copy()
    changed[mask] = 250
    crop = cfg(size=97, margin=0.0)  # enlarged with cubic interpolation: edges blend
    differs = np.any(crop_and_resize(image, crop) != crop_and_resize(changed, crop), axis=2)
    footprint = crop_footprint(image, mask, crop)
    assert differs.any() and not (differs & ~footprint).any()
