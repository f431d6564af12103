"""The official face backend (S3FD + DWPose + BiSeNet) on random or hand-built weights.

Real weights cannot be downloaded here, so every checkpoint below is written by the tests in
the official file layout and key names: random-init modules saved with ``torch.save``, some
with their heads set by hand so that the outcome is known, and tiny ONNX graphs with the
official DWPose input/output names and shapes whose SimCC outputs are computable. None of
them is a real model; they exercise loading, pre- and post-processing, not accuracy.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from inference.config import PrepareConfig
from inference.errors import InferenceError
from inference.face_official import OFFICIAL_FILES
from inference.face_official.bisenet import BiSeNet, FaceParser
from inference.face_official.checkpoints import load_strict
from inference.face_official.dwpose import (
    INPUT_H,
    INPUT_W,
    DWPoseLandmarker,
    box_center_scale,
    decode_simcc,
    face_mirror_indices,
    preprocess,
    to_frame,
    warp_matrix,
)
from inference.face_official.s3fd import S3FDDetector, S3FDNet, candidates, nms, select_face
from inference.faces import MEAN_SHAPE_68, select_backend

CPU = torch.device("cpu")
HEADS = ("conv3_3_norm", "conv4_3_norm", "conv5_3_norm", "fc7", "conv6_2", "conv7_2")


# ---------------------------------------------------------------- hand-made checkpoints


def _s3fd_with_fixed_scores(face_logit: float) -> S3FDNet:
    """Random S3FD whose conf heads ignore the image: every prior gets face logit
    ``face_logit`` against background 0 (score sigmoid(face_logit)); loc heads output 0, so
    every decoded box is its prior. Random weights alone rarely or arbitrarily find faces."""
    torch.manual_seed(0)
    net = S3FDNet()
    with torch.no_grad():
        for head in HEADS:
            conf, loc = getattr(net, f"{head}_mbox_conf"), getattr(net, f"{head}_mbox_loc")
            conf.weight.zero_()
            conf.bias.zero_()
            conf.bias[-1] = face_logit
            loc.weight.zero_()
            loc.bias.zero_()
    return net


def _onnx_model(nodes: list, initializers: list) -> object:
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        nodes,
        "dwpose-stand-in",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, INPUT_H, INPUT_W])],
        [
            helper.make_tensor_value_info("simcc_x", onnx.TensorProto.FLOAT, [1, 133, 576]),
            helper.make_tensor_value_info("simcc_y", onnx.TensorProto.FLOAT, [1, 133, 768]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _write_peak_tracking_onnx(path: Path) -> Path:
    """A graph whose SimCC vectors are the column/row profiles of the red input channel:
    simcc_x[k, j] = max over rows of channel 0 at column j // 2 (every keypoint alike), and
    the same over columns for simcc_y. A bright spot in the frame peaks where the affine
    warp puts it, so decoding must land back on the spot."""
    onnx = pytest.importorskip("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    consts = [
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([1, 1, 576], dtype=np.int64), "shape_x"),
        numpy_helper.from_array(np.array([1, 1, 768], dtype=np.int64), "shape_y"),
        numpy_helper.from_array(np.array([1, 133, 576], dtype=np.int64), "full_x"),
        numpy_helper.from_array(np.array([1, 133, 768], dtype=np.int64), "full_y"),
    ]
    nodes = []
    for axis, reduce_axis in (("x", 2), ("y", 3)):
        nodes += [
            helper.make_node("ReduceMax", ["input"], [f"m_{axis}"], axes=[reduce_axis], keepdims=0),
            helper.make_node("Gather", [f"m_{axis}", "zero"], [f"red_{axis}"], axis=1),
            helper.make_node("Unsqueeze", [f"red_{axis}", "two"], [f"col_{axis}"]),
            helper.make_node("Concat", [f"col_{axis}", f"col_{axis}"], [f"dup_{axis}"], axis=2),
            helper.make_node("Reshape", [f"dup_{axis}", f"shape_{axis}"], [f"row_{axis}"]),
            helper.make_node("Expand", [f"row_{axis}", f"full_{axis}"], [f"simcc_{axis}"]),
        ]
    consts.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "two"))
    onnx.save(_onnx_model(nodes, consts), path)
    return path


def _mirror_consistent_face_bins() -> tuple[np.ndarray, np.ndarray]:
    """x and y SimCC bins (68,) of the mean face shape in the input's middle, built so that a
    mirrored input predicts the mirrored face (x bins of mirror partners sum to 574; y bins
    equal), as a real pose network would: flip-test averaging then keeps every peak."""
    shape = np.asarray(MEAN_SHAPE_68)
    mirror = face_mirror_indices()
    bins_x, bins_y = np.zeros(68, dtype=np.int64), np.zeros(68, dtype=np.int64)
    for k in range(68):
        left = min(k, int(mirror[k]))
        if mirror[k] == k:
            bins_x[k] = 287
        else:
            x = int(2 * (104 + 80 * shape[left, 0]))
            bins_x[k] = x if k == left else 574 - x
        bins_y[k] = int(2 * (150 + 100 * shape[left, 1]))
    return bins_x, bins_y


def _write_constant_face_onnx(path: Path) -> Path:
    """A graph with fixed SimCC outputs: face keypoint k peaks (value 1, two bins wide) at
    :func:`_mirror_consistent_face_bins`; every non-face keypoint peaks at bin 0, so reading
    the wrong rows shows. The input only enters multiplied by 0."""
    onnx = pytest.importorskip("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    bins_x, bins_y = _mirror_consistent_face_bins()
    peaks = {"x": np.zeros((1, 133, 576), np.float32), "y": np.zeros((1, 133, 768), np.float32)}
    peaks["x"][0, :, 0:2] = peaks["y"][0, :, 0:2] = 1.0
    for k in range(68):
        peaks["x"][0, 23 + k] = 0.0
        peaks["y"][0, 23 + k] = 0.0
        peaks["x"][0, 23 + k, bins_x[k] : bins_x[k] + 2] = 1.0
        peaks["y"][0, 23 + k, bins_y[k] : bins_y[k] + 2] = 1.0
    inits = [numpy_helper.from_array(peaks[a], f"peaks_{a}") for a in "xy"]
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "nil"))
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "nil"], ["zero"]),
        helper.make_node("Add", ["peaks_x", "zero"], ["simcc_x"]),
        helper.make_node("Add", ["peaks_y", "zero"], ["simcc_y"]),
    ]
    onnx.save(_onnx_model(nodes, inits), path)
    return path


def _write_official_dir(root: Path, s3fd: S3FDNet) -> Path:
    """MODELS_DIR with every official face file: ``s3fd`` (as s3fd-619a316812.pth), a random
    BiSeNet and the constant-face DWPose stand-in."""
    (root / "s3fd").mkdir(parents=True)
    (root / "face-parse-bisent").mkdir()
    (root / "dwpose").mkdir()
    torch.save(s3fd.state_dict(), root / "s3fd" / "s3fd-619a316812.pth")
    torch.manual_seed(1)
    torch.save(BiSeNet().eval().state_dict(), root / "face-parse-bisent" / "79999_iter.pth")
    _write_constant_face_onnx(root / "dwpose" / "dw-ll_ucoco_384.onnx")
    return root


@pytest.fixture(scope="module")
def s3fd_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("s3fd") / "s3fd-619a316812.pth"
    torch.save(S3FDNet().state_dict(), path)
    return path


# ---------------------------------------------------------------- S3FD


def test_it_loads_s3fd_weights_strictly(s3fd_file: Path) -> None:
    net = load_strict(S3FDNet(), s3fd_file, "S3FD")

    saved = torch.load(s3fd_file, weights_only=True)
    assert set(net.state_dict()) == set(saved)
    assert torch.equal(net.fc7_mbox_conf.weight, saved["fc7_mbox_conf.weight"])
    assert torch.equal(net.conv3_3_norm.weight, saved["conv3_3_norm.weight"])


def test_it_names_wrong_keys_when_loading_s3fd(s3fd_file: Path, tmp_path: Path) -> None:
    state = torch.load(s3fd_file, weights_only=True)
    state["module.fc7.weight"] = state.pop("fc7.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)

    with pytest.raises(InferenceError) as caught:
        load_strict(S3FDNet(), path, "S3FD")

    assert "missing keys: fc7.weight" in caught.value.message
    assert "unexpected keys: module.fc7.weight" in caught.value.message
    assert caught.value.permanent


def test_it_names_missing_weight_files(tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match="S3FD weights not found"):
        S3FDDetector.from_file(tmp_path / "s3fd.pth", CPU)


def test_it_decodes_a_crafted_s3fd_head_into_the_expected_box() -> None:
    # One face prior on the stride-16 head (third), at row 2, col 3: prior centre
    # (8 + 3*16, 8 + 2*16) = (56, 40), side 64. Offsets shift the centre by
    # 0.5 * 0.1 * 64 = 3.2 px right and scale the width by exp(0.2 * ln 2 / 0.2) = 2.
    outputs = []
    for size in (40, 20, 10, 5, 3, 2):
        conf = torch.zeros(1, 2, size, size)
        conf[0, 0] = 10.0  # background everywhere: softmax face score ~4.5e-5 < 0.05
        outputs.append((conf, torch.zeros(1, 4, size, size)))
    conf, loc = outputs[2]
    conf[0, :, 2, 3] = torch.tensor([0.0, 3.0])  # face score softmax = 0.9526
    loc[0, :, 2, 3] = torch.tensor([0.5, 0.0, float(np.log(2.0)) / 0.2, 0.0])

    dets = candidates(outputs)

    assert dets.shape == (1, 5)
    np.testing.assert_allclose(
        dets[0], [59.2 - 64, 40 - 32, 59.2 + 64, 40 + 32, 0.95257], atol=1e-4
    )
    assert select_face(dets) == (0, 8, 123, 72)  # x1 = -4.8 clipped at 0; truncated to int


def test_it_keeps_the_highest_box_and_suppresses_overlaps() -> None:
    dets = np.array(
        [
            [10, 10, 50, 50, 0.7],
            [12, 12, 52, 52, 0.9],  # IoU with row 0 ~0.83: suppressed by this one
            [100, 100, 140, 140, 0.8],  # separate face
            [200, 200, 240, 240, 0.3],  # separate but below the 0.5 score threshold
        ]
    )

    assert nms(dets, 0.3) == [1, 2, 3]
    assert select_face(dets) == (12, 12, 52, 52)
    assert select_face(dets[3:]) is None
    assert select_face(np.zeros((0, 5))) is None


def test_it_detects_nothing_when_every_prior_is_background() -> None:
    detector = S3FDDetector(_s3fd_with_fixed_scores(face_logit=-5.0), CPU)

    assert detector.detect(np.full((64, 64, 3), 128, np.uint8)) is None


def test_it_subtracts_the_means_after_flipping_bgr_to_rgb() -> None:
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 0] = 200  # blue

    tensor = S3FDDetector(S3FDNet(), CPU).preprocess(frame)

    assert tensor.shape == (1, 3, 4, 4)
    assert tensor[0, :, 0, 0].tolist() == [-104.0, -117.0, 200.0 - 123.0]


# ---------------------------------------------------------------- BiSeNet


def test_it_loads_bisenet_strictly_and_parses_with_the_main_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = BiSeNet().eval()
    with torch.no_grad():
        # Main head votes for class 7 wherever its (non-negative) features are non-zero;
        # the auxiliary heads vote for class 3 and must not be read.
        net.conv_out.conv_out.weight.fill_(-1.0)
        net.conv_out.conv_out.weight[7] = 1.0
        for aux in (net.conv_out16, net.conv_out32):
            aux.conv_out.weight.fill_(-1.0)
            aux.conv_out.weight[3] = 1.0
    path = tmp_path / "79999_iter.pth"
    torch.save(net.state_dict(), path)
    parser = FaceParser.from_file(path, CPU)
    face = np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8)

    classes = parser.parse(face)

    assert classes.shape == (512, 512) and classes.dtype == np.uint8
    assert classes.max() <= 18
    assert (classes == 7).mean() > 0.9
    assert not (classes == 3).any()


def test_it_rejects_a_bisenet_checkpoint_without_the_auxiliary_heads(tmp_path: Path) -> None:
    state = {k: v for k, v in BiSeNet().state_dict().items() if not k.startswith("conv_out16")}
    torch.save(state, tmp_path / "79999_iter.pth")

    with pytest.raises(InferenceError, match="missing keys: conv_out16"):
        FaceParser.from_file(tmp_path / "79999_iter.pth", CPU)


def test_it_resizes_and_normalises_the_crop_like_torchvision() -> None:
    face = np.zeros((100, 80, 3), np.uint8)
    face[..., 0] = 255  # red

    tensor = FaceParser.preprocess(face)

    assert tensor.shape == (1, 3, 512, 512)
    np.testing.assert_allclose(
        tensor[0, :, 256, 256].numpy(),
        [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225],
        rtol=1e-5,
    )


# ---------------------------------------------------------------- DWPose


def test_it_fixes_the_whole_frame_box_to_three_by_four() -> None:
    center, scale = box_center_scale(200, 300)  # padded 250 x 375: already 2:3, widen to 3:4

    np.testing.assert_allclose(center, [100, 150])
    np.testing.assert_allclose(scale, [281.25, 375.0])
    _, wide = box_center_scale(640, 360)  # padded 800 x 450: heighten to 800 x 1066.67
    np.testing.assert_allclose(wide, [800.0, 800.0 * 4 / 3])


def test_it_maps_the_padded_box_onto_the_model_input_and_back() -> None:
    center, scale = box_center_scale(200, 300)
    matrix = warp_matrix(center, scale)
    corners = np.array([center - scale / 2, center, center + scale / 2])

    mapped = corners @ matrix[:, :2].T + matrix[:, 2]

    expected = [[0, 0], [INPUT_W / 2, INPUT_H / 2], [INPUT_W, INPUT_H]]
    np.testing.assert_allclose(mapped, expected, atol=1e-9)
    np.testing.assert_allclose(to_frame(mapped, center, scale), corners)


def test_it_warps_a_bgr_frame_into_a_normalised_rgb_tensor() -> None:
    frame = np.zeros((300, 200, 3), np.uint8)
    frame[145:156, 95:106] = (255, 0, 0)  # a blue square around the centre (100, 150)

    tensor, _, _ = preprocess(frame)

    assert tensor.shape == (1, 3, INPUT_H, INPUT_W) and tensor.dtype == np.float32
    np.testing.assert_allclose(
        tensor[0, :, INPUT_H // 2, INPUT_W // 2],
        [-123.675 / 58.395, -116.28 / 57.12, (255 - 103.53) / 57.375],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        tensor[0, :, 2, 2], [-123.675 / 58.395, -116.28 / 57.12, -103.53 / 57.375], rtol=1e-5
    )


def test_it_decodes_simcc_peaks_into_frame_pixels() -> None:
    simcc_x, simcc_y = np.full((3, 576), -1.0), np.full((3, 768), -1.0)
    simcc_x[0, 100], simcc_y[0, 300] = 0.9, 0.8  # input (50, 150)
    simcc_x[1, 575], simcc_y[1, 0] = 0.5, 0.5  # input (287.5, 0)
    simcc_x[2, 10], simcc_y[2, 10] = 0.5, -0.2  # weak: mmpose puts it at bin -1

    keypoints, scores = decode_simcc(simcc_x, simcc_y)
    center, scale = box_center_scale(200, 300)  # 281.25 frame px across 288 input px

    np.testing.assert_allclose(keypoints, [[50, 150], [287.5, 0], [-0.5, -0.5]])
    np.testing.assert_allclose(scores, [0.8, 0.5, -0.2])
    frame_points = to_frame(keypoints, center, scale)
    factor = 281.25 / 288
    np.testing.assert_allclose(frame_points[0], [50 * factor - 40.625, 150 * factor - 37.5])


def test_it_explains_that_onnxruntime_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail

    with pytest.raises(InferenceError, match="needs the 'onnxruntime' package"):
        DWPoseLandmarker(Path("dwpose/dw-ll_ucoco_384.onnx"))


def test_it_finds_a_bright_spot_through_onnx_with_flip_test(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    landmarker = DWPoseLandmarker(_write_peak_tracking_onnx(tmp_path / "dw.onnx"))
    frame = np.zeros((300, 200, 3), np.uint8)
    yy, xx = np.mgrid[0:300, 0:200]
    blob = 255 * np.exp(-((xx - 61) ** 2 + (yy - 207) ** 2) / (2 * 3.0**2))
    frame[..., 2] = blob.astype(np.uint8)  # red channel (BGR), read by the graph as RGB[0]

    landmarks = landmarker.landmarks(frame)

    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
    # One input pixel is 281.25 / 288 ~ 0.98 frame px, plus up to 1 px of int truncation.
    assert np.abs(landmarks - [61, 207]).max() <= 2.0
    assert np.array_equal(landmarks, np.trunc(landmarks))


def test_it_reads_the_face_rows_and_keeps_mirror_consistent_peaks(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    path = _write_constant_face_onnx(tmp_path / "dw.onnx")
    bins_x, bins_y = _mirror_consistent_face_bins()
    # Frame 160 x 128 (h x w): padded 160 x 200, heightened to 3:4 -> scale 160 x 213.33.
    expected_x = np.trunc(bins_x / 2 / 288 * 160 + 64 - 80)
    expected_y = np.trunc(bins_y / 2 / 384 * (160 * 4 / 3) + 80 - 160 * 4 / 3 / 2)

    for flip_test in (True, False):
        landmarks = DWPoseLandmarker(path, flip_test=flip_test).landmarks(
            np.zeros((160, 128, 3), np.uint8)
        )
        np.testing.assert_allclose(landmarks[:, 0], expected_x, atol=1e-4)
        np.testing.assert_allclose(landmarks[:, 1], expected_y, atol=1e-4)


# ---------------------------------------------------------------- backend


def test_it_lists_the_onnx_export_as_the_only_dwpose_file() -> None:
    assert OFFICIAL_FILES["dwpose"] == ("dwpose/dw-ll_ucoco_384.onnx",)


def test_it_refuses_to_build_without_every_official_file(tmp_path: Path) -> None:
    from inference.face_official.backend import OfficialFaceBackend

    (tmp_path / "s3fd").mkdir()
    (tmp_path / "s3fd" / "s3fd.pth").write_bytes(b"")

    with pytest.raises(InferenceError) as caught:
        OfficialFaceBackend(tmp_path)

    assert "dwpose (dwpose/dw-ll_ucoco_384.onnx)" in caught.value.message
    assert "face-parse-bisent" in caught.value.message and "s3fd (" not in caught.value.message


def test_it_returns_no_face_when_s3fd_finds_none(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from inference.face_official.backend import OfficialFaceBackend

    root = _write_official_dir(tmp_path / "models", _s3fd_with_fixed_scores(face_logit=-5.0))
    backend = OfficialFaceBackend(root)

    assert backend.detect(np.full((96, 96, 3), 90, np.uint8)) is None


def test_it_prepares_an_avatar_end_to_end(tmp_path: Path, tiny_vae: AutoencoderKL) -> None:
    pytest.importorskip("onnxruntime")
    from inference.face_official.backend import OfficialFaceBackend
    from inference.preparation import load_avatar, prepare_avatar
    from tests.media import make_face_video

    # Every S3FD prior scores sigmoid(5) = 0.993, so every frame "has a face"; the landmarks
    # come from the constant-face DWPose stand-in, so the crop box is known in advance.
    root = _write_official_dir(tmp_path / "models", _s3fd_with_fixed_scores(face_logit=5.0))
    backend = OfficialFaceBackend(root)
    video = make_face_video(tmp_path / "face.mp4", seconds=0.2, size=(128, 160))

    manifest = prepare_avatar(
        video,
        tmp_path / "avatar",
        vae=tiny_vae,
        face_backend=backend,
        config=PrepareConfig(batch_size=4, max_frames=3, idle_video=False),
        model_info={"profile": "random-tiny", "note": "random face weights, not real models"},
    )

    assert manifest.face_backend == "official-dwpose-s3fd-bisenet"
    assert (manifest.frame_count, manifest.frames_without_face) == (3, 0)
    landmarks = np.load(tmp_path / "avatar" / "landmarks.npy")
    bins_x, _ = _mirror_consistent_face_bins()
    np.testing.assert_allclose(landmarks[0, :, 0], np.trunc(bins_x / 2 / 288 * 160 - 16))
    avatar = load_avatar(tmp_path / "avatar", device="cpu", dtype=torch.float32)
    x1, y1, x2, y2 = avatar.face_boxes[0]
    assert (x1, x2) == (int(landmarks[0, :, 0].min()), int(landmarks[0, :, 0].max()))
    assert y2 == min(int(landmarks[0, :, 1].max()) + 10, 160)
    assert all(mask.shape[0] > 0 for mask in avatar.masks)


def test_it_selects_the_official_backend_when_its_weights_exist(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("onnxruntime")
    root = _write_official_dir(tmp_path / "models", _s3fd_with_fixed_scores(face_logit=-5.0))

    with caplog.at_level(logging.INFO, logger="inference.faces"):
        chosen = select_backend(root)

    assert chosen.name == "official-dwpose-s3fd-bisenet"
    assert "face backend: official-dwpose-s3fd-bisenet" in caplog.text
