"""Shared test data of the captioner tests: a tiny configuration, descriptions, images."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vitrina.models.captioner import CaptionerConfig, build_captioner, training_settings

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}
GARMENTS = ["top", "dress", "skirt", "jacket"]

TINY = dict(
    image_size=32,
    patch_size=16,
    encoder_layers=1,
    encoder_width=32,
    encoder_heads=2,
    encoder_mlp=64,
    decoder_layers=1,
    decoder_width=32,
    decoder_heads=2,
    n_positions=32,
    max_target_length=24,
    vocab_size=320,
    min_frequency=1,
    dropout=0.1,
    seed=0,
)

#: Two epochs of both phases, every loss term on, one thread, fp32 (exact resumption).
SETTINGS = dict(
    max_epochs=2,
    pretrain_max_epochs=1,
    batch_size=4,
    learning_rate=3e-3,
    warmup_ratio=0.2,
    accelerator="cpu",
    precision="32-true",
    num_threads=1,
    patience=None,
    log_every_n_steps=1,
    sample_images=1,
    n_decode_workers=1,
    token_dropout=0.3,
    bow_weight=0.5,
)


def descriptions() -> list[str]:
    return [f"A {c} {g} in soft cotton with long sleeves." for c in COLOURS for g in GARMENTS] + [
        f"Straight-cut {g} in {c} woven fabric." for c in COLOURS for g in GARMENTS
    ]


def write_images(root: Path) -> list[str]:
    """Three coloured 40x60 JPEGs (non-square: padded like image_processing does)."""
    paths = []
    for name, rgb in COLOURS.items():
        path = Path(root) / f"{name}.jpg"
        Image.new("RGB", (40, 60), rgb).save(path)
        paths.append(str(path))
    return paths


def train_tiny(images: list[str], output_dir: Path, callbacks=(), **overrides):
    """Train the tiny captioner on 12 training and 3 validation items."""
    from vitrina.models.captioner import fit_captioner

    texts = [f"A {c} top in soft cotton." for c in COLOURS]
    captioner = build_captioner(CaptionerConfig.from_params(TINY, "tiny"), texts * 2)
    config, options = training_settings({**SETTINGS, **overrides})
    return fit_captioner(
        captioner,
        ([f"t{i}" for i in range(12)], images * 4, texts * 4),
        (["v0", "v1", "v2"], images, texts),
        config,
        options,
        output_dir=output_dir,
        callbacks=callbacks,
    )
