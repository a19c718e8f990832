"""Shared data for the CLIP tests: 24 learnable colour × part pairs and a tiny ruCLIP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from vitrina.models.ruclip import write_tiny_ruclip_checkpoint

COLOURS = {
    "красный": (220, 30, 30),
    "зелёный": (30, 180, 60),
    "синий": (30, 60, 220),
    "жёлтый": (240, 220, 40),
    "чёрный": (10, 10, 10),
    "белый": (250, 250, 250),
}
PARTS = {
    "верх": (0, 0, 32, 16),
    "низ": (0, 16, 32, 32),
    "лево": (0, 0, 16, 32),
    "право": (16, 0, 32, 32),
}
TINY = dict(
    vocab_size=80,
    embed_dim=16,
    image_resolution=32,
    vision_patch_size=16,
    vision_width=64,
    vision_layers=1,
    transformer_width=32,
    transformer_heads=2,
    transformer_layers=1,
    context_length=16,
)
#: ``clip_finetune.train`` settings that keep test runs small and deterministic on a CPU.
FAST = dict(
    accelerator="cpu",
    precision="32-true",
    num_threads=1,
    decode_threads=1,
    eval_batch_size=64,
    log_every_n_steps=1,
)


def make_pairs(root: Path, copies: int = 2) -> pd.DataFrame:
    """24 colour × part combinations, ``copies`` noisy images of each: a learnable task."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for c, (colour, rgb) in enumerate(COLOURS.items()):
        for p, (part, box) in enumerate(PARTS.items()):
            for k in range(copies):
                arr = rng.integers(100, 156, size=(32, 32, 3)).astype(np.uint8)
                x0, y0, x1, y1 = box
                arr[y0:y1, x0:x1] = rgb
                path = root / f"{c}{p}{k}.png"
                Image.fromarray(arr).save(path)
                title = f"{colour} {part}"
                rows.append(
                    {
                        "product_id": f"{c}{p}{k}",
                        "title": title,
                        "processed_path": str(path),
                        "group_id": f"{c}{p}",
                        "image_key": f"{c}{p}{k}",
                        "text_key": title,
                    }
                )
    return pd.DataFrame(rows)


def make_checkpoint(path: Path, titles: list[str], seed: int = 0) -> Path:
    return write_tiny_ruclip_checkpoint(path, titles * 4, seed=seed, **TINY)


def split(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Copy 0 of every combination trains, copy 1 validates (titles seen, images new)."""
    val = pairs["product_id"].str.endswith("1")
    return pairs[~val].reset_index(drop=True), pairs[val].reset_index(drop=True)


def make_data_dir(root: Path) -> Path:
    """``root/pairs.parquet`` and ``root/ckpt`` (the tiny ruCLIP)."""
    pairs = make_pairs(root / "images")
    pairs.to_parquet(root / "pairs.parquet")
    make_checkpoint(root / "ckpt", pairs["title"].tolist())
    return root


def tiny_hf_clip(path: Path) -> Path:
    """A tiny random Hugging Face CLIP checkpoint (model + byte-level BPE tokenizer + processor)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {
        c: i
        for i, c in enumerate(
            chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
        )
    }
    path.mkdir()
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "bos_token_id": 512,
            "eos_token_id": 513,
            "pad_token_id": 513,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 16,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(path)
    return path
