from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from inference.blending import (
    blend_face,
    blend_mask,
    blur_kernel_size,
    crop_box,
    crop_face,
    crop_with_padding,
    expanded_crop_box,
    jaw_dilate_kernel,
    jaw_mask,
)
from inference.faces import LOWER_LIP, MOUTH, NECK, NOSE, SKIN, UPPER_LIP

FALLBACK = (5, 6, 95, 99)


def _landmarks() -> np.ndarray:
    """68 points: nose lm[29] at (50, 60), x from 20 to 90, lowest point y=100 (chin)."""
    lm = np.tile(np.array([[50.0, 60.0]]), (68, 1))
    lm[0] = (20.0, 70.0)
    lm[16] = (90.0, 70.0)
    lm[8] = (55.0, 100.0)
    return lm


def test_it_builds_the_crop_box_symmetric_about_the_nose() -> None:
    # y_half = 60, d = 100 - 60 = 40 -> y1 = 20; y2 = 100 + margin 10.
    box = crop_box(_landmarks(), bbox_shift=0, extra_margin=10, frame_h=200, fallback_box=FALLBACK)

    assert box == (20, 20, 90, 110)


def test_it_moves_the_upper_edge_with_bbox_shift() -> None:
    up = crop_box(_landmarks(), bbox_shift=-10, extra_margin=0, frame_h=200, fallback_box=FALLBACK)
    down = crop_box(_landmarks(), bbox_shift=10, extra_margin=0, frame_h=200, fallback_box=FALLBACK)

    # -10: y_half 50, d 50 -> y1 0.  +10: y_half 70, d 30 -> y1 40.
    assert up == (20, 0, 90, 100)
    assert down == (20, 40, 90, 100)


def test_it_falls_back_when_the_shift_passes_the_chin_and_leaves_the_input_alone() -> None:
    lm = _landmarks()
    before = lm.copy()

    # [quirk] the shifted nose (y 105) joins max(lm.y): d = 0, y1 = y2 = 105, an empty box.
    box = crop_box(lm, bbox_shift=45, extra_margin=10, frame_h=200, fallback_box=FALLBACK)

    assert box == (5, 6, 95, 109)  # the fallback box, with the margin still added
    np.testing.assert_array_equal(lm, before)


def test_it_falls_back_when_a_landmark_is_left_of_the_frame() -> None:
    lm = _landmarks()
    lm[0] = (-3.0, 70.0)

    box = crop_box(lm, bbox_shift=0, extra_margin=0, frame_h=200, fallback_box=FALLBACK)

    assert box == FALLBACK


def test_it_truncates_landmarks_and_clips_the_box_to_the_frame() -> None:
    lm = _landmarks()
    lm[16] = (90.9, 70.0)
    lm[8] = (55.0, 100.7)

    box = crop_box(
        lm, bbox_shift=0, extra_margin=10, frame_h=105, frame_w=88, fallback_box=FALLBACK
    )

    # int32 truncation: x2 90, y2 100 (so d = 40, y1 = 20); margin clipped to the frame
    # height 105 and x2 to the frame width 88.
    assert box == (20, 20, 88, 105)


def test_it_stretches_the_crop_to_256_with_lanczos() -> None:
    frame = np.zeros((120, 200, 3), dtype=np.uint8)
    frame[:, :100] = (0, 0, 255)
    frame[:, 100:] = (255, 0, 0)
    box = (50, 10, 150, 60)  # 100 wide, 50 tall: stretched, not letterboxed

    crop = crop_face(frame, box)

    assert crop.shape == (256, 256, 3)
    expected = cv2.resize(frame[10:60, 50:150], (256, 256), interpolation=cv2.INTER_LANCZOS4)
    np.testing.assert_array_equal(crop, expected)
    assert tuple(crop[0, 10]) == (0, 0, 255) and tuple(crop[255, 245]) == (255, 0, 0)


def test_it_rejects_an_empty_crop() -> None:
    with pytest.raises(ValueError, match="empty"):
        crop_face(np.zeros((50, 50, 3), dtype=np.uint8), (60, 10, 80, 30))


def test_it_expands_the_face_box_to_a_square() -> None:
    # xc 150, yc 150, max(w, h) = 200 -> s = int(100 * 1.5) = 150.
    assert expanded_crop_box((100, 50, 200, 250)) == (0, 0, 300, 300)
    # xc 25, yc 40, max(31, 40) // 2 = 20 -> s = 30.
    assert expanded_crop_box((10, 20, 41, 60)) == (-5, 10, 55, 70)
    assert expanded_crop_box((10, 20, 41, 60), expand=1.0) == (5, 20, 45, 60)


def test_it_crops_with_black_outside_the_frame_like_pil() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    box = (-10, 25, 30, 55)

    crop = crop_with_padding(frame, box)

    expected = np.asarray(Image.fromarray(frame).crop(box))
    np.testing.assert_array_equal(crop, expected)
    assert crop.shape == (30, 40, 3)
    assert not crop[:, :10].any() and not crop[15:].any()


def test_it_builds_the_custom_jaw_dilation_kernel() -> None:
    kernel = jaw_dilate_kernel()

    assert kernel.shape == (33, 33)
    widths = kernel.sum(axis=1)
    assert widths[:10].tolist() == [0] * 10
    assert widths[10:21].tolist() == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21]
    assert widths[21:].tolist() == [21] * 12
    assert kernel[16, 16] == 1 and kernel[10, 16] == 1
    assert np.array_equal(kernel, kernel[:, ::-1])  # centred runs
    assert kernel[21:, 6:27].all() and not kernel[:, :6].any() and not kernel[:, 27:].any()


def test_it_grows_skin_16_px_up_and_6_px_down_in_the_central_band() -> None:
    classes = np.zeros((512, 512), dtype=np.uint8)
    classes[300, 256] = SKIN

    mask = jaw_mask(classes, mode="jaw", left_cheek_width=90, right_cheek_width=90)

    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max()) == (284, 306)
    assert (cols.min(), cols.max()) == (246, 266)
    assert mask.sum() // 255 == jaw_dilate_kernel().sum() == 373
    assert set(np.unique(mask)) == {0, 255}


def test_it_erodes_skin_on_the_cheek_sides() -> None:
    classes = np.zeros((512, 512), dtype=np.uint8)
    classes[200:300, 20:120] = SKIN  # entirely in the left cheek band (columns 0..166)

    mask = jaw_mask(classes, mode="jaw", left_cheek_width=90, right_cheek_width=90)

    # Dilation widens row 250 to columns 10..129; two erosions by the 35x3 ellipse (a 35 px
    # centre row, single-pixel top and bottom rows) take 2 x 17 px off each side: 44..95.
    assert np.flatnonzero(mask[250]).tolist() == list(range(44, 96))
    # Dilation lifts the top edge to row 184; the ellipse's 1 px rows take two rows back.
    assert np.flatnonzero(mask[:, 70]).min() == 186


def test_it_cuts_out_the_nose_and_keeps_mouth_and_lips() -> None:
    classes = np.zeros((512, 512), dtype=np.uint8)
    classes[150:400, 150:360] = SKIN
    classes[200:260, 240:270] = NOSE
    classes[420:430, 240:270] = MOUTH  # below the skin: kept although not grown into
    classes[430:435, 240:270] = UPPER_LIP
    classes[435:440, 240:270] = LOWER_LIP

    mask = jaw_mask(classes, mode="jaw")

    assert not mask[200:260, 240:270].any()
    assert mask[420:440, 240:270].all()
    assert mask[300, 255] == 255


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("raw", {SKIN, MOUTH, UPPER_LIP, LOWER_LIP}),
        ("neck", {SKIN, MOUTH, UPPER_LIP, LOWER_LIP, NECK}),
    ],
)
def test_it_keeps_only_the_mode_classes(mode: str, expected: set[int]) -> None:
    classes = np.arange(19, dtype=np.uint8).repeat(27)[:512]
    classes = np.tile(classes, (512, 1))

    mask = jaw_mask(classes, mode=mode)

    kept = set(np.unique(classes[mask == 255]).tolist())
    assert kept == expected


def test_it_rejects_an_unknown_parsing_mode() -> None:
    with pytest.raises(ValueError, match="parsing mode"):
        jaw_mask(np.zeros((512, 512), dtype=np.uint8), mode="hair")


def test_it_sizes_the_blur_kernel_like_upstream() -> None:
    assert blur_kernel_size(300, 0.1) == 31
    assert blur_kernel_size(300, 0.05) == 15
    assert blur_kernel_size(188, 0.1) == 19


def test_it_masks_only_the_lower_half_of_the_expanded_square_inside_the_face_box() -> None:
    frame = np.zeros((400, 400, 3), dtype=np.uint8)
    face_box = (150, 100, 250, 300)  # expanded square: (50, 50, 350, 350), 300 px
    classes = np.full((512, 512), SKIN, dtype=np.uint8)

    mask, box = blend_mask(frame, face_box, classes, upper_boundary_ratio=0.5, blur_factor=0.1)

    assert box == (50, 50, 350, 350)
    assert mask.shape == (300, 300) and mask.dtype == np.uint8
    # Rows above int(300 * 0.5) are zeroed before the 31 px blur (spec §7.3 steps 4-5), so
    # only the blur's 15 px reach crosses the boundary.
    assert not mask[:135].any() and 0 < mask[149, 150] < 255
    assert mask[166:234, 116:184].min() == 255  # inside the face box, 15+ px from its edges
    # The face box is x 100..199, y 50..249 in crop pixels; the 31 px blur reaches 15 px out.
    assert not mask[:, :84].any() and not mask[:, 216:].any() and not mask[266:].any()
    assert 0 < mask[200, 95] < 255  # feathered edge


def test_it_blends_the_face_only_where_the_mask_is_set() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    original = frame.copy()
    face = np.full((256, 256, 3), 200, dtype=np.uint8)
    face_box = (60, 40, 160, 160)
    mask_box = expanded_crop_box(face_box)  # (20, 10, 200, 190)
    mask = np.zeros((180, 180), dtype=np.uint8)
    mask[100:140, 50:130] = 255
    mask[140:150, 50:130] = 128

    out = blend_face(frame, face, face_box, mask, mask_box)

    np.testing.assert_array_equal(frame, original)  # not modified in place
    changed = np.zeros(frame.shape[:2], dtype=bool)
    changed[110:160, 70:150] = True
    np.testing.assert_array_equal(out[~changed], frame[~changed])  # bit-identical outside
    assert (out[110:150, 70:150] == 200).all()  # full alpha: the generated face
    half = (200 * 128 + frame[150:160, 70:150].astype(int) * 127 + 128) // 255
    assert np.abs(out[150:160, 70:150].astype(int) - half).max() <= 1


def test_it_matches_pil_paste_semantics_at_the_frame_edge() -> None:
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    face_box = (100, 50, 150, 118)
    mask_box = expanded_crop_box(face_box)  # (74, 33, 176, 135): past the right/bottom edges
    mask = rng.integers(0, 256, (102, 102), dtype=np.uint8)

    out = blend_face(frame, face, face_box, mask, mask_box)

    # Upstream (spec §8.4): PIL crop, paste the resized face, paste back with the mask as alpha.
    body = Image.fromarray(frame)
    large = body.crop(mask_box)
    large.paste(Image.fromarray(cv2.resize(face, (50, 68))), (26, 17))
    body.paste(large, mask_box[:2], Image.fromarray(mask))
    np.testing.assert_array_equal(out, np.asarray(body))


def test_it_rejects_a_mask_of_the_wrong_size() -> None:
    frame = np.zeros((100, 100, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="mask shape"):
        blend_face(
            frame,
            np.zeros((256, 256, 3), np.uint8),
            (10, 10, 50, 50),
            np.zeros((5, 5), np.uint8),
            (0, 0, 60, 60),
        )
