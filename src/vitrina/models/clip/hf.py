"""Hugging Face CLIP checkpoints in the ``save_pretrained`` layout (read, detect, write).

A fine-tuned CLIP that is not a ruCLIP model is stored the way ``transformers`` stores it:
``config.json`` + ``model.safetensors`` from ``CLIPModel.save_pretrained`` and the
processor files (tokenizer, ``processor_config.json``) from
``CLIPProcessor.save_pretrained``. :class:`vitrina.models.clip.bundle.ClipBundle` is the
one in-memory form of both layouts; this module only knows the files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitrina.utils import atomic_path

#: Weight files of ``save_pretrained`` (current, legacy).
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: Processor files (``transformers`` 5 writes ``processor_config.json``, 4 and the hub
#: checkpoints ``preprocessor_config.json``).
HF_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
#: The ruCLIP layout's files (``bpe.model`` tells it apart from ``save_pretrained``).
RUCLIP_FILES = ("bpe.model", "config.json", "pytorch_model.bin")


def is_hf_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a ``save_pretrained`` model (``config.json``, weights) and
    its processor files, and no ruCLIP ``bpe.model``."""
    path = Path(path)
    return (
        (path / "config.json").is_file()
        and any((path / f).is_file() for f in HF_WEIGHT_FILES)
        and any((path / f).is_file() for f in HF_PROCESSOR_FILES)
        and not (path / "bpe.model").is_file()
    )


def is_ruclip_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds the three ruCLIP files (:data:`RUCLIP_FILES`)."""
    return all((Path(path) / f).is_file() for f in RUCLIP_FILES)


def load_hf_model(path: Path, device: str = "cpu") -> tuple[Any, Any]:
    """``(AutoModel in eval mode, AutoProcessor)`` of a local ``save_pretrained`` directory."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(path).to(device).eval()
    return model, AutoProcessor.from_pretrained(path)


def save_hf_model(model: Any, processor: Any, out_dir: str | os.PathLike[str]) -> Path:
    """``save_pretrained`` the model and processor into ``out_dir``, atomically.

    Files are written into a temporary directory beside ``out_dir`` that is then renamed
    into place (an existing ``out_dir`` is replaced), so ``out_dir`` never holds a partial
    checkpoint.

    Returns:
        ``Path(out_dir)``.
    """
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 → a normal directory
    return out_dir
