"""Backbone registry: published architectures, tiny forward passes, specs, checkpoints."""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.models.clip.helpers import tiny_hf_clip
from vitrina.models.classifiers import (
    REGISTRY,
    ImageBackbone,
    available_backbones,
    backbone_from_spec,
    build_backbone,
)
from vitrina.models.clip import ClipBundle
from vitrina.models.embedders import build_embedder
from vitrina.models.ruclip import CheckpointNotFoundError, load_ruclip, write_tiny_ruclip_checkpoint

TINY = ["tiny_resnet", "tiny_vit", "tiny_convnext"]

#: Published parameter counts without the ImageNet head (torchvision / timm / the hub model
#: cards: total minus the 1000-way classifier; DINOv2 has none), in millions, and the
#: pooled feature width (seed 004's embedding_size where it lists the model).
PUBLISHED = {
    "resnet18": (11.177, 512),  # 11.690M - 0.513M fc
    "resnet34": (21.285, 512),  # 21.798M - 0.513M
    "resnet50": (23.508, 2048),  # 25.557M - 2.049M
    "resnet101": (42.500, 2048),  # 44.549M - 2.049M
    "mobilenet_v2": (2.224, 1280),  # 3.505M - 1.281M; seed 004's table says 576
    "efficientnet_b0": (4.008, 1280),  # 5.289M - 1.281M
    "efficientnet_b3": (10.696, 1536),  # 12.233M - 1.537M
    "efficientnet_b4": (17.549, 1792),  # 19.342M - 1.793M
    "convnext_tiny": (27.820, 768),  # 28.589M - 0.769M
    "vit_b16": (85.799, 768),  # 86.568M - 0.769M
    "swin_tiny": (27.519, 768),  # 28.288M - 0.769M
    "dinov2_small": (22.057, 384),  # facebook/dinov2-small
    "dinov2_base": (86.580, 768),  # facebook/dinov2-base
}


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """huggingface_hub offline with an empty cache; any socket connection fails the test."""
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network access is not allowed in tests")

    from huggingface_hub import constants

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


def test_registry_names():
    names = available_backbones()
    assert set(PUBLISHED) | set(TINY) | {"clip_vision"} == set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_architectures_match_their_parameter_counts(name):
    """Every real-size config built on the meta device: params and feature width."""
    params_m, dim = PUBLISHED[name]
    with torch.device("meta"):
        backbone = build_backbone(name)
        feats = backbone(torch.empty(2, 3, 224, 224))
    n = sum(p.numel() for p in backbone.parameters())
    assert n / 1e6 == pytest.approx(params_m, abs=0.002), f"{name}: {n / 1e6:.3f}M params"
    assert backbone.feature_dim == dim
    assert tuple(feats.shape) == (2, dim)
    assert backbone.name == name and backbone.family == REGISTRY[name].family
    json.dumps(backbone.build_spec())


@pytest.mark.parametrize("name", TINY)
def test_tiny_backbones_forward_and_train(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, image_size=64)
    assert not backbone.training  # eval mode, as from_pretrained returns models
    x = torch.randn(3, 3, 64, 64)
    feats = backbone(x)
    assert feats.dtype == torch.float32 and tuple(feats.shape) == (3, backbone.feature_dim)
    assert sum(p.numel() for p in backbone.parameters()) < 100_000
    # a different batch element changes only its own row (no cross-batch leakage in eval)
    x2 = x.clone()
    x2[1] += 1.0
    feats2 = backbone(x2)
    torch.testing.assert_close(feats2[[0, 2]], feats[[0, 2]], atol=1e-5, rtol=0)
    assert not torch.allclose(feats2[1], feats[1])
    # gradients reach the first layer
    backbone.train()
    backbone(x).pow(2).mean().backward()
    grads = [p.grad for p in backbone.parameters() if p.requires_grad]
    assert grads[0] is not None and grads[0].abs().sum() > 0


def test_image_size_sets_vit_positions_and_other_sizes_interpolate():
    vit = build_backbone("tiny_vit", image_size=64)
    assert vit.image_size == 64
    assert vit.model.embeddings.position_embeddings.shape[1] == (64 // 16) ** 2 + 1
    assert tuple(vit(torch.randn(2, 3, 96, 96)).shape) == (2, 32)  # interpolated
    cnn = build_backbone("tiny_resnet")
    for side in (32, 64, 97):
        assert tuple(cnn(torch.randn(1, 3, side, side)).shape) == (1, 32)
    with pytest.raises(ValueError, match=r"must be \[B, 3, H, W\], got \[2, 1, 64, 64\]"):
        cnn(torch.randn(2, 1, 64, 64))


@pytest.mark.parametrize("name", TINY)
def test_spec_round_trip_rebuilds_the_same_model(name):
    torch.manual_seed(1)
    original = build_backbone(name, image_size=64, overrides={"hidden_act": "silu"})
    spec = json.loads(json.dumps(original.build_spec()))
    assert spec["config"]["hidden_act"] == "silu"
    assert spec["feature_dim"] == original.feature_dim and spec["family"] == original.family
    torch.manual_seed(2)
    rebuilt = backbone_from_spec(spec)
    x = torch.randn(2, 3, 64, 64)
    assert not torch.allclose(rebuilt(x), original(x))  # random weights differ...
    rebuilt.load_state_dict(original.state_dict())  # ...until the state dict is loaded
    torch.testing.assert_close(rebuilt(x), original(x), atol=1e-6, rtol=0)
    assert (rebuilt.image_mean, rebuilt.image_std) == (original.image_mean, original.image_std)


def test_spec_errors():
    with pytest.raises(ValueError, match="Not a backbone spec"):
        backbone_from_spec({"format": "other"})
    spec = build_backbone("tiny_resnet").build_spec()
    with pytest.raises(ValueError, match="Unknown backbone family 'densenet'"):
        backbone_from_spec({**spec, "family": "densenet"})
    with pytest.raises(ValueError, match="feature_dim 99 but the rebuilt model has 32"):
        backbone_from_spec({**spec, "feature_dim": 99})


def test_save_pretrained_and_local_checkpoint_round_trip(tmp_path, no_network):
    torch.manual_seed(3)
    original = build_backbone("tiny_convnext")
    original.image_mean, original.image_std = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
    out = original.save_pretrained(tmp_path / "ckpt")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    loaded = build_backbone("tiny_convnext", checkpoint=str(out))
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), original(x), atol=1e-6, rtol=0)
    assert loaded.image_mean == (0.1, 0.2, 0.3) and loaded.image_std == (0.4, 0.5, 0.6)
    # the checkpoint's config defines the architecture: same family, other sizes are fine
    assert build_backbone("convnext_tiny", checkpoint=str(out)).feature_dim == 64
    # overrides patch the loaded config
    assert build_backbone("tiny_convnext", checkpoint=str(out), overrides={"drop_path_rate": 0.2}).model.config.drop_path_rate == 0.2  # fmt: skip
    with pytest.raises(
        ValueError, match="is a 'resnet' model but checkpoint .* holds a 'convnext'"
    ):
        build_backbone("resnet18", checkpoint=str(out))


def test_checkpoint_errors_are_clear(tmp_path, no_network):
    with pytest.raises(CheckpointNotFoundError) as info:
        build_backbone("resnet50", checkpoint="microsoft/resnet-50")
    msg = str(info.value)
    assert "microsoft/resnet-50" in msg and "HF_HUB_OFFLINE" in msg and "directory path" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="has no config.json"):
        build_backbone("resnet50", checkpoint=str(tmp_path / "empty"))


def test_unknown_name_and_bad_override():
    with pytest.raises(
        ValueError, match=r"Unknown backbone 'densenet121'; available: \[.*'resnet18'"
    ):
        build_backbone("densenet121")
    with pytest.raises(ValueError, match="override 'no_such_field' is not a field of ResNetConfig"):
        build_backbone("tiny_resnet", overrides={"no_such_field": 1})
    with pytest.raises(ValueError, match="'clip_vision' needs checkpoint="):
        build_backbone("clip_vision")


def test_timm_names_fail_with_the_reason_where_timm_does_not_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(ImportError) as info:
        build_backbone("timm:densenet121")
    msg = str(info.value)
    assert "timm:densenet121" in msg and "torchvision" in msg and "torch==2.13.0" in msg
    assert "resnet50" in msg and "vitrina[timm]" in msg


# ---------------------------------------------------------------- clip_vision
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four random RGB JPEGs of different sizes."""
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(0, 255, (50 + 7 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.jpg")
    return sorted(root.glob("*.jpg"))


def _pixels(processor, paths) -> torch.Tensor:
    rgb = [Image.open(p).convert("RGB") for p in paths]
    return processor(images=rgb, return_tensors="pt")["pixel_values"]


def _normalised(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x, dim=1).numpy()


def test_clip_vision_from_a_tiny_ruclip_matches_the_embedder(tmp_path, photos, no_network):
    path = write_tiny_ruclip_checkpoint(tmp_path / "ruclip", ["красное платье", "кеды"], seed=4)
    backbone = build_backbone("clip_vision", checkpoint=str(path))
    bundle = load_ruclip(path)
    assert backbone.family == "clip_vision" and backbone.feature_dim == bundle.config.embed_dim
    assert backbone.image_mean == tuple(bundle.config.mean)
    embedder = build_embedder({"type": "ruclip", "checkpoint": str(path)}, {"progress": False})
    expected = embedder.embed_images(photos)
    with torch.inference_mode():
        feats = backbone(_pixels(bundle.image_processor, photos))
    np.testing.assert_allclose(_normalised(feats), expected, atol=1e-5)
    # the spec rebuilds the tower offline; the state dict restores the weights
    rebuilt = backbone_from_spec(json.loads(json.dumps(backbone.build_spec())))
    rebuilt.load_state_dict(backbone.state_dict())
    x = _pixels(bundle.image_processor, photos)
    torch.testing.assert_close(rebuilt(x), backbone(x), atol=1e-6, rtol=0)
    # and save_pretrained of the tower loads back as clip_vision
    saved = build_backbone("clip_vision", checkpoint=str(backbone.save_pretrained(tmp_path / "t")))
    torch.testing.assert_close(saved(x), backbone(x), atol=1e-6, rtol=0)
    assert saved.image_std == backbone.image_std


def test_clip_vision_from_a_hf_clip_directory(tmp_path, photos, no_network):
    path = tiny_hf_clip(tmp_path / "hf")
    backbone = build_backbone("clip_vision", checkpoint=str(path))
    bundle = ClipBundle.load(path)
    assert backbone.feature_dim == 16
    with torch.inference_mode():
        x = _pixels(bundle.processor.image_processor, photos)
        expected = bundle.model.get_image_features(pixel_values=x)
        expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
        torch.testing.assert_close(backbone(x), expected, atol=1e-5, rtol=0)
    assert isinstance(backbone, ImageBackbone)
