"""Embedders: batching/sorting never changes results; baseline; registry; HF CLIP loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.models.clip.helpers import tiny_hf_clip
from vitrina.models.clip import ClipBundle
from vitrina.models.embedders import build_embedder, embedder_from_bundle
from vitrina.models.ruclip import image_features, text_features, write_tiny_ruclip_checkpoint
from vitrina.models.tfidf_svd import TfidfSvdEmbedder

TITLES = [
    "Платье женское красное в полоску",
    "Кроссовки мужские чёрные",
    "Футболка детская синяя в горошек",
    "Сумка",
    "Брюки женские бежевые классические со стрелками и высокой посадкой",
    "Шапка",
    "Юбка женская зелёная в клетку",
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = write_tiny_ruclip_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny", TITLES * 3, seed=1
    )
    return ClipBundle.load(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        path = root / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, size=(40 + 3 * i, 30, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_clip_embedder_equals_one_by_one_forward_passes(bundle, images):
    emb = embedder_from_bundle(bundle, {"batch_size": 3, "num_workers": 2, "progress": False})
    text = emb.embed_texts(TITLES)
    image = emb.embed_images(images)
    assert text.dtype == image.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():
        for i, title in enumerate(TITLES):  # full 77-token padding, one text at a time
            batch = bundle.tokenizer([title], padding="max_length")
            ref = text_features(bundle.model, batch["input_ids"], batch["attention_mask"])[0]
            np.testing.assert_allclose(text[i], (ref / ref.norm()).numpy(), atol=1e-5)
        for i, path in enumerate(images):
            pixels = bundle.image_processor(
                images=Image.open(path).convert("RGB"), return_tensors="pt"
            )["pixel_values"]
            ref = image_features(bundle.model, pixels)[0]
            np.testing.assert_allclose(image[i], (ref / ref.norm()).numpy(), atol=1e-5)


def test_bf16_autocast_stays_close_to_fp32(bundle, images):
    fp32 = embedder_from_bundle(bundle, {"batch_size": 4, "progress": False})
    bf16 = embedder_from_bundle(bundle, {"batch_size": 4, "precision": "bf16", "progress": False})
    cos = (fp32.embed_images(images) * bf16.embed_images(images)).sum(axis=1)
    assert cos.min() > 0.98
    with pytest.raises(ValueError, match="precision must be one of"):
        embedder_from_bundle(bundle, {"precision": "int4"})


def test_int8_towers_stay_close_to_fp32_and_leave_the_model_alone(bundle, images, monkeypatch):
    from vitrina.models.quantization import is_int8
    from vitrina.training import precision

    fp32 = embedder_from_bundle(bundle, {"batch_size": 4, "progress": False})
    int8 = embedder_from_bundle(bundle, {"batch_size": 4, "precision": "int8", "progress": False})
    assert is_int8(int8.model.text_model) and is_int8(int8.model.vision_model)
    assert not is_int8(bundle.model)  # a copy: the bundle can still be fine-tuned or saved
    for embed in ("embed_texts", "embed_images"):
        items = TITLES if embed == "embed_texts" else images
        cos = (getattr(fp32, embed)(items) * getattr(int8, embed)(items)).sum(axis=1)
        assert cos.min() > 0.99, (embed, cos)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    settings = {"precision": "auto", "device": "cpu", "progress": False}
    auto = embedder_from_bundle(bundle.with_model(int8.model), settings)
    assert auto.precision == "int8" and auto.model is int8.model  # int8 already: no new copy
    # sharded embeddings reuse a shard by fingerprint: int8 must differ from fp32, and repeat
    assert int8.fingerprint() == auto.fingerprint() != fp32.fingerprint()


def test_tfidf_svd_baseline(images):
    texts = TITLES * 2
    emb = TfidfSvdEmbedder(n_components=8, image_side=4, progress=False)
    with pytest.raises(RuntimeError, match="fit must be called"):
        emb.embed_texts(texts)
    emb.fit(texts, images * 2)
    text, image = emb.embed_texts(texts), emb.embed_images(images * 2)
    assert text.shape == (14, 8) and image.shape[0] == 14
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    sims = text @ text.T
    assert sims[0, 7] > 0.99  # same title
    assert sims[0, 6] > sims[0, 1]  # «... женская ... в клетку» shares more n-grams with the dress
    with pytest.raises(ValueError, match="at least 3 products"):
        TfidfSvdEmbedder().fit(["a", "b"], images[:2])


def test_registry_errors_name_the_problem():
    with pytest.raises(
        ValueError,
        match=r"Unknown embedder type 'bert'; known types: \['hf_clip', 'ruclip', 'tfidf_svd'\]",
    ):
        build_embedder({"type": "bert"})
    with pytest.raises(ValueError, match="needs a 'checkpoint'"):
        build_embedder({"type": "ruclip"}, name="base")


def test_hf_clip_from_a_local_directory(tmp_path, images):
    path = tiny_hf_clip(tmp_path / "clip")
    emb = build_embedder(
        {"type": "hf_clip", "checkpoint": str(path)},
        {"batch_size": 2, "progress": False},
        name="clip",
    )
    text = emb.embed_texts(["red dress", "black sneakers", "red dress"])
    image = emb.embed_images(images[:3])
    assert text.shape == (3, 16) and image.shape == (3, 16)
    np.testing.assert_allclose(text[0], text[2], atol=1e-6)
    assert not np.allclose(text[0], text[1])
