"""Hugging Face CLIP checkpoints (``save_pretrained`` layout) as a bundle like ruCLIP's.

A fine-tuned CLIP that is not a ruCLIP model is stored the way ``transformers`` stores it:
``config.json`` + ``model.safetensors`` from ``CLIPModel.save_pretrained`` and the
processor files (tokenizer, ``processor_config.json``) from
``CLIPProcessor.save_pretrained``.  :class:`HfClipBundle` is the in-memory counterpart of
:class:`vitrina.models.ruclip.RuClipBundle`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitrina.utils import atomic_path

__all__ = [
    "HfClipBundle",
    "is_hf_checkpoint",
    "load_clip_checkpoint",
    "load_hf_clip",
    "save_hf_clip",
]

#: Weight files of ``save_pretrained`` (current, legacy).
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: Processor files (``transformers`` 5 writes ``processor_config.json``, 4 and the hub
#: checkpoints ``preprocessor_config.json``).
HF_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@dataclass
class HfClipBundle:
    """A loaded Hugging Face CLIP checkpoint.

    Attributes:
        model: ``transformers`` CLIP-like model (``get_text_features``,
            ``get_image_features``, ``logit_scale``), in eval mode.
        processor: its ``AutoProcessor`` (``.tokenizer``, ``.image_processor``).
        path: the directory it was loaded from (``None`` if built in memory).
    """

    model: Any
    processor: Any
    path: Path | None = None


def is_hf_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a ``save_pretrained`` model (``config.json``, weights) and
    its processor files."""
    path = Path(path)
    return (
        (path / "config.json").is_file()
        and any((path / f).is_file() for f in HF_WEIGHT_FILES)
        and any((path / f).is_file() for f in HF_PROCESSOR_FILES)
    )


def load_hf_clip(name_or_path: str | os.PathLike[str], device: str = "cpu") -> HfClipBundle:
    """Load a Hugging Face CLIP checkpoint (local directory or hub id).

    Raises:
        vitrina.models.ruclip.CheckpointNotFoundError: not local and not downloadable.
    """
    from transformers import AutoModel, AutoProcessor

    from vitrina.models.ruclip import resolve_checkpoint

    path = resolve_checkpoint(name_or_path, required_files=None)
    model = AutoModel.from_pretrained(path).to(device).eval()
    return HfClipBundle(model, AutoProcessor.from_pretrained(path), Path(path))


def load_clip_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> Any:
    """Load a local CLIP checkpoint directory of either layout.

    Returns:
        :class:`HfClipBundle` for a ``save_pretrained`` directory without ``bpe.model``,
        else :class:`vitrina.models.ruclip.RuClipBundle` (ruCLIP layout).

    Raises:
        vitrina.models.ruclip.CheckpointNotFoundError: neither layout is complete.
    """
    from vitrina.models.ruclip import load_ruclip

    path = Path(path)
    if is_hf_checkpoint(path) and not (path / "bpe.model").is_file():
        return load_hf_clip(path, device)
    return load_ruclip(path, device)


def save_hf_clip(bundle: HfClipBundle, out_dir: str | os.PathLike[str]) -> Path:
    """``save_pretrained`` the model and processor into ``out_dir``, atomically.

    Files are written into a temporary directory beside ``out_dir`` that is then renamed
    into place (an existing ``out_dir`` is replaced), so ``out_dir`` never holds a partial
    checkpoint.

    Returns:
        ``Path(out_dir)``.
    """
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        bundle.model.save_pretrained(tmp)
        bundle.processor.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 → a normal directory
    return out_dir
