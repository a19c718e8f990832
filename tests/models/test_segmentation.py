"""Segmenters (foreground GrabCut, YOLO-seg ONNX decoding), COCO RLE, apply_mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from tests.models.tiny_yolo_seg import NM, write_tiny_yolo_seg
from vitrina.models.segmentation import (
    apply_mask,
    decode_rle,
    encode_rle,
    make_segmenter,
    mask_bbox,
    mask_iou,
    overlay,
    rle_json,
)
from vitrina.models.segmentation.yolo_onnx import letterbox


# --------------------------------------------------------------------------- RLE
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 48)])
def test_rle_round_trip(shape):
    rng = np.random.default_rng(0)
    for mask in (rng.random(shape) < 0.3, np.zeros(shape, bool), np.ones(shape, bool)):
        rle = encode_rle(mask)
        assert rle["size"] == list(shape)
        assert isinstance(rle["counts"], str)
        np.testing.assert_array_equal(decode_rle(rle), mask)
        np.testing.assert_array_equal(decode_rle(rle_json(mask)), mask)


def test_rle_uncompressed_counts_and_errors():
    # COCO's uncompressed form: column-major runs starting with background
    mask = decode_rle({"size": [2, 3], "counts": [1, 2, 3]})
    np.testing.assert_array_equal(mask, np.array([[0, 1, 0], [1, 0, 0]], bool))
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="COCO RLE"):
        decode_rle({"counts": "x"})


def test_iou_and_bbox():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:4] = True
    b[2:6, 2:6] = True
    assert mask_iou(a, b) == pytest.approx(4 / 28)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert mask_bbox(b) == [2, 2, 6, 6]
    assert mask_bbox(np.zeros((3, 3))) is None
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(a, b[:5])


# --------------------------------------------------------------------- apply_mask
def _picture() -> tuple[Image.Image, np.ndarray]:
    arr = np.full((40, 60, 3), 90, np.uint8)
    arr[..., 1] = np.arange(60, dtype=np.uint8)[None, :]
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:50] = True
    return Image.fromarray(arr, "RGB"), mask


def test_apply_mask_remove_background_and_crop():
    image, mask = _picture()
    out = np.asarray(apply_mask(image, mask, "remove_background", background=(1, 2, 3)))
    assert out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out[mask], np.asarray(image)[mask])
    assert (out[~mask] == [1, 2, 3]).all()
    crop = apply_mask(image, mask, "crop")
    assert crop.size == (30, 20)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(image)[10:30, 20:50])


def test_apply_mask_resizes_a_mask_of_another_size_and_handles_empty_masks():
    image, mask = _picture()
    small = mask[::2, ::2]  # the mask of a half-size copy
    crop = apply_mask(image, small, "crop")
    assert abs(crop.width - 30) <= 2 and abs(crop.height - 20) <= 2
    empty = np.zeros((40, 60), bool)
    assert apply_mask(image, empty, "crop").size == image.size
    assert (np.asarray(apply_mask(image, empty, "remove_background")) == 255).all()
    with pytest.raises(ValueError, match="remove_background, crop"):
        apply_mask(image, mask, "blur")
    with pytest.raises(ValueError, match="2-D"):
        apply_mask(image, np.zeros((4, 4, 3)), "crop")


def test_overlay_tints_the_mask_only():
    image, mask = _picture()
    out = np.asarray(overlay(image, mask, colour=(255, 0, 0), alpha=0.5)).astype(int)
    src = np.asarray(image).astype(int)
    assert (out[mask][:, 0] > src[mask][:, 0]).all()  # redder inside
    assert (out[~mask] >= src[~mask]).all()  # washed out outside


# --------------------------------------------------------------------------- YOLO
def test_letterbox_centres_and_pads():
    canvas, r, (left, top) = letterbox(np.zeros((100, 50, 3), np.uint8), 64)
    assert canvas.shape == (64, 64, 3) and r == pytest.approx(0.64)
    assert (left, top) == (16, 0)
    assert (canvas[:, :16] == 114).all() and (canvas[:, 16:48] == 0).all()


@pytest.fixture(scope="module")
def tiny_yolo(tmp_path_factory):
    return write_tiny_yolo_seg(tmp_path_factory.mktemp("onnx") / "tiny-seg.onnx", size=256)


@pytest.mark.parametrize("shape", [(120, 200), (200, 120)])
def test_yolo_decoding_keeps_the_nms_winner_person_inside_its_box(tiny_yolo, shape):
    seg = make_segmenter("yolo_seg_onnx", {"model_path": str(tiny_yolo)})
    h, w = shape
    image = np.zeros((h, w, 3), np.uint8)
    image[h // 4 : 3 * h // 4, w // 5 : 4 * w // 5, 0] = 255  # red block
    result = seg.segment(image)
    # candidate 0 (person, 0.9): red pixels in the left half of the picture; candidate 1
    # (its NMS loser), 2 (not a person) and 3 (under threshold) would add the others
    expected = np.zeros((h, w), bool)
    expected[h // 4 : 3 * h // 4, w // 5 : w // 2] = True
    assert result.mask.shape == (h, w)
    assert result.score == pytest.approx(0.9)
    assert mask_iou(result.mask, expected) > 0.9
    ys, xs = np.nonzero(result.mask)
    assert xs.max() < w // 2 + 3 and xs.min() >= w // 5 - 3  # cut to its box, un-letterboxed
    assert ys.min() >= h // 4 - 3 and ys.max() < 3 * h // 4 + 3


def test_yolo_nobody_above_threshold_gives_an_empty_mask(tiny_yolo):
    seg = make_segmenter("yolo_seg_onnx", {"model_path": str(tiny_yolo), "conf_threshold": 0.95})
    result = seg.segment(np.zeros((30, 40, 3), np.uint8))
    assert result.score == 0.0 and not result.mask.any() and result.mask.shape == (30, 40)
    assert "conf=0.95" in seg.version


def test_yolo_wrong_output_shapes_are_named(tmp_path):
    too_few = write_tiny_yolo_seg(tmp_path / "few.onnx", boxes=np.zeros((1, 4 + NM, 5)))
    with pytest.raises(ValueError, match=r"output0 \[1, 4 \+ classes \+ masks.*36 channels"):
        make_segmenter("yolo_seg_onnx", {"model_path": str(too_few)})
    flat = write_tiny_yolo_seg(tmp_path / "flat.onnx", boxes=np.zeros((4 + 2 + NM, 5)))
    with pytest.raises(ValueError, match=r"the model gives \[38, 5\]"):
        make_segmenter("yolo_seg_onnx", {"model_path": str(flat)})
    with pytest.raises(ValueError, match="person_class 5 is not among the model's 2 classes"):
        make_segmenter(
            "yolo_seg_onnx",
            {"model_path": str(write_tiny_yolo_seg(tmp_path / "ok.onnx")), "person_class": 5},
        )
    with pytest.raises(FileNotFoundError, match="no ONNX file at"):
        make_segmenter("yolo_seg_onnx", {"model_path": str(tmp_path / "missing.onnx")})


def test_yolo_model_with_one_output_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])],
        "one_output",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "one.onnx"))
    with pytest.raises(ValueError, match="expected two outputs"):
        make_segmenter("yolo_seg_onnx", {"model_path": str(tmp_path / "one.onnx")})


# --------------------------------------------------------------------- foreground
def test_foreground_finds_a_product_on_a_plain_background_inside_padding():
    photo = Image.new("RGB", (120, 160), (236, 236, 232))
    ImageDraw.Draw(photo).ellipse((25, 30, 95, 130), fill=(40, 90, 170))
    truth = Image.new("L", (120, 160), 0)
    ImageDraw.Draw(truth).ellipse((25, 30, 95, 130), fill=255)
    padded = ImageOps.pad(photo, (160, 160), color=(255, 255, 255))  # as image_processing pads
    truth = np.asarray(ImageOps.pad(truth, (160, 160), color=0)) > 127
    result = make_segmenter("foreground").segment(np.asarray(padded))
    assert mask_iou(result.mask, truth) > 0.97
    assert 0.5 < result.score <= 1.0


def test_foreground_on_demo_photos_against_their_true_masks(tmp_path):
    from vitrina.demo import generate_demo_catalogue
    from vitrina.demo.masks import write_demo_masks

    table = generate_demo_catalogue(tmp_path / "demo", n_products=16, seed=5, n_defects=0)
    masks = write_demo_masks(tmp_path / "demo", n_products=16, seed=5, n_defects=0)
    seg = make_segmenter("foreground")
    ious = []
    for picture in table["picture"]:
        image = np.asarray(Image.open(tmp_path / "demo" / "images" / picture).convert("RGB"))
        truth = np.asarray(Image.open(masks / picture.replace(".jpg", ".png"))) > 127
        ious.append(mask_iou(seg.segment(image).mask, truth))
    assert np.median(ious) > 0.95
    assert np.mean(ious) > 0.85


def test_foreground_rejects_bad_input_and_arguments():
    seg = make_segmenter("foreground")
    with pytest.raises(ValueError, match=r"RGB uint8 images \[H, W, 3\]"):
        seg.segment(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"border must be in \(0, 0.5\)"):
        make_segmenter("foreground", {"border": 0.7})
    with pytest.raises(ValueError, match="foreground, yolo_seg_onnx"):
        make_segmenter("sam")
