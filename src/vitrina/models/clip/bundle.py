"""One CLIP bundle for ruCLIP and Hugging Face CLIP checkpoints.

:class:`ClipBundle` is what every part of Vitrina holds for a CLIP model, whatever the
checkpoint's layout: the ``transformers`` model, its tokenizer and image processor, and
the path it came from. It offers one interface:

* :meth:`ClipBundle.load` — a hub id or a local directory; the layout is detected from
  the files (``bpe.model`` + ``config.json`` + ``pytorch_model.bin``: ruCLIP, converted on
  load by :mod:`vitrina.models.ruclip`; ``save_pretrained`` files: any Hugging Face CLIP or
  SigLIP);
* :meth:`~ClipBundle.save` — the layout it was loaded from, atomically;
* :meth:`~ClipBundle.encode_texts`, :meth:`~ClipBundle.encode_images` — L2-normalised
  ``float32 [N, D]`` embeddings (batched by :class:`vitrina.models.embedders.ClipEmbedder`);
* :meth:`~ClipBundle.tokenize`, :meth:`~ClipBundle.token_ids`,
  :meth:`~ClipBundle.preprocess`, :meth:`~ClipBundle.image_uint8` — the processor;
* for training: :meth:`~ClipBundle.towers` (text / vision transformer with its projection),
  ``model.logit_scale``, :meth:`~ClipBundle.with_model` (the same processor around
  fine-tuned weights).

The two layouts are two small subclasses (:class:`RuClipCheckpointBundle`,
:class:`HfClipBundle`); callers never ask which one they hold.
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .hf import is_hf_checkpoint, is_ruclip_checkpoint, load_hf_model, save_hf_model

#: ``kind`` values of :meth:`ClipBundle.load` (the ``type`` of an ``embeddings.models`` spec).
KINDS = ("auto", "ruclip", "hf_clip")


class ClipBundle(ABC):
    """A loaded CLIP checkpoint (see the module docstring).

    Attributes:
        kind: ``ruclip`` or ``hf_clip`` (the layout :meth:`save` writes).
        model: ``transformers`` CLIP-like model (``get_text_features``,
            ``get_image_features``, ``text_model``, ``vision_model``, ``logit_scale``).
        image_processor: its image processor (resize, crop, rescale, normalise).
        path: the directory it was loaded from (``None`` when built in memory).
    """

    kind: ClassVar[str]
    model: Any
    image_processor: Any
    path: Path | None

    # ------------------------------------------------------------------ layout-specific
    @property
    @abstractmethod
    def tokenizer(self) -> Any:
        """The text tokenizer (:class:`~vitrina.models.ruclip.RuClipTokenizer` or a
        ``transformers`` tokenizer)."""

    @property
    @abstractmethod
    def pad_id(self) -> int:
        """The padding token id."""

    @abstractmethod
    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, truncated to the context, unpadded."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        """A model batch: ``input_ids`` and ``attention_mask`` ``LongTensor [B, L]``."""

    @abstractmethod
    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write the checkpoint in its own layout into ``out_dir`` (atomically)."""

    # ------------------------------------------------------------------ processor
    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel normalisation mean (RGB, pixels scaled to [0, 1])."""
        return tuple(float(v) for v in self.image_processor.image_mean)

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel normalisation standard deviation."""
        return tuple(float(v) for v in self.image_processor.image_std)

    def preprocess(self, image: Any) -> np.ndarray:
        """One RGB ``PIL.Image`` → normalised ``float32 [3, R, R]`` as the model expects."""
        return self.image_processor(images=image, return_tensors="np")["pixel_values"][0]

    def image_uint8(self, path: str | os.PathLike[str]) -> np.ndarray:
        """One image file resized and cropped for the model: ``uint8 [3, R, R]`` (the
        processor's pixels before its rescale / normalise step)."""
        from vitrina.models.embedders import load_rgb

        arr = self.image_processor(
            images=load_rgb(path), do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"][0]
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ inference
    def embedder(self, settings: dict[str, Any] | None = None, name: str = "clip") -> Any:
        """A :class:`vitrina.models.embedders.ClipEmbedder` over this bundle.

        Args:
            settings: ``batch_size`` (64), ``device`` (auto), ``precision`` (fp32; ``int8``
                and ``auto`` too, see :class:`~vitrina.models.embedders.ClipEmbedder`),
                ``num_workers`` (2), ``progress`` (true).
        """
        from vitrina.models.embedders import ClipEmbedder

        settings = settings or {}
        return ClipEmbedder(
            self.model,
            self.tokenize,
            self.preprocess,
            batch_size=settings.get("batch_size", 64),
            device=settings.get("device", "auto"),
            precision=settings.get("precision", "fp32"),
            num_workers=settings.get("num_workers", 2),
            progress=settings.get("progress", True),
            name=name,
        )

    def encode_texts(self, texts: Sequence[str], **settings: Any) -> np.ndarray:
        """L2-normalised text embeddings ``float32 [N, D]`` (settings: :meth:`embedder`)."""
        return self.embedder({"progress": False, **settings}).embed_texts(texts)

    def encode_images(self, paths: Sequence[str | os.PathLike[str]], **settings: Any) -> np.ndarray:
        """L2-normalised image embeddings ``float32 [N, D]`` of image files."""
        return self.embedder({"progress": False, **settings}).embed_images(paths)

    # ------------------------------------------------------------------ training
    def towers(self) -> dict[str, tuple[Any, list[Any]]]:
        """``{"text": (text_model, [text_projection]), "vision": (vision_model,
        [visual_projection])}`` of the model.

        Raises:
            TypeError: the model has no ``text_model`` / ``vision_model`` (not CLIP-like).
        """
        return clip_towers(self.model)

    def with_model(self, model: Any) -> ClipBundle:
        """A copy holding ``model`` (same tokenizer, processor, config; no path)."""
        return dataclasses.replace(self, model=model, path=None)

    # ------------------------------------------------------------------ loading
    @staticmethod
    def load(
        name_or_path: str | os.PathLike[str], kind: str = "auto", device: str = "cpu"
    ) -> ClipBundle:
        """Load a CLIP checkpoint from a local directory or a hub id.

        Args:
            name_or_path: a directory, or a hub repo id (fetched by
                :func:`vitrina.models.ruclip.resolve_checkpoint`: the local cache first).
            kind: ``auto`` (detect from the files), ``ruclip`` or ``hf_clip``.
            device: where to put the model.

        Raises:
            ValueError: an unknown ``kind``.
            vitrina.models.ruclip.CheckpointNotFoundError: not local, not downloadable, or
                a directory holding neither layout (the message names both).
        """
        from vitrina.models.ruclip import CheckpointNotFoundError, resolve_checkpoint

        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "ruclip":
            return RuClipCheckpointBundle.load(name_or_path, device)
        path = resolve_checkpoint(name_or_path, required_files=None)
        if kind == "auto" and is_ruclip_checkpoint(path):
            return RuClipCheckpointBundle.load(path, device)
        if kind == "hf_clip" or is_hf_checkpoint(path):
            model, processor = load_hf_model(path, device)
            return HfClipBundle(model, processor, Path(path))
        raise CheckpointNotFoundError(
            f"{path} holds neither a ruCLIP checkpoint (bpe.model, config.json, "
            "pytorch_model.bin) nor a save_pretrained one (config.json, model.safetensors, "
            f"processor_config.json); it has {sorted(p.name for p in Path(path).iterdir())}"
        )


def clip_towers(model: Any) -> dict[str, tuple[Any, list[Any]]]:
    """See :meth:`ClipBundle.towers` (for a bare model)."""
    from torch import nn

    towers = {}
    for name, body, head in (
        ("text", "text_model", "text_projection"),
        ("vision", "vision_model", "visual_projection"),
    ):
        if not hasattr(model, body):
            raise TypeError(
                f"{type(model).__name__} has no {body}: only CLIP-like models can be fine-tuned"
            )
        heads = [getattr(model, head)] if isinstance(getattr(model, head, None), nn.Module) else []
        towers[name] = (getattr(model, body), heads)
    return towers


@dataclass
class RuClipCheckpointBundle(ClipBundle):
    """A ruCLIP checkpoint (``ai-forever/ruclip-*`` layout), converted to ``CLIPModel``.

    Attributes:
        model: ``transformers.CLIPModel``.
        ruclip_tokenizer: :class:`~vitrina.models.ruclip.RuClipTokenizer`.
        image_processor: from :func:`~vitrina.models.ruclip.make_image_processor`.
        config: :class:`~vitrina.models.ruclip.RuClipConfig` (written back on save).
        path: the checkpoint directory.
    """

    kind: ClassVar[str] = "ruclip"
    model: Any
    ruclip_tokenizer: Any
    image_processor: Any
    config: Any
    path: Path | None = None

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str], device: str = "cpu") -> ClipBundle:  # type: ignore[override]
        """:func:`vitrina.models.ruclip.load_ruclip` as a bundle."""
        from vitrina.models.ruclip import load_ruclip

        return cls.from_ruclip(load_ruclip(name_or_path, device))

    @classmethod
    def from_ruclip(cls, bundle: Any) -> RuClipCheckpointBundle:
        """From a :class:`vitrina.models.ruclip.RuClipBundle`."""
        return cls(
            bundle.model, bundle.tokenizer, bundle.image_processor, bundle.config, bundle.path
        )

    @property
    def tokenizer(self) -> Any:
        return self.ruclip_tokenizer

    @property
    def pad_id(self) -> int:
        return int(self.ruclip_tokenizer.pad_id)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [
            list(map(int, ids)) for ids in self.ruclip_tokenizer.encode([str(t) for t in texts])
        ]

    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        # The text transformer is causal and pools at eos: padding to the batch's longest
        # title gives the same features as ruclip's padding to the full context.
        return self.ruclip_tokenizer([str(t) for t in texts], padding="longest")

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        from vitrina.models.ruclip import save_ruclip_checkpoint

        return save_ruclip_checkpoint(self.model, self.ruclip_tokenizer, self.config, out_dir)


@dataclass
class HfClipBundle(ClipBundle):
    """A Hugging Face CLIP / SigLIP checkpoint (``save_pretrained`` layout).

    Attributes:
        model: the ``AutoModel``.
        processor: its ``AutoProcessor`` (``.tokenizer``, ``.image_processor``).
        path: the checkpoint directory.
    """

    kind: ClassVar[str] = "hf_clip"
    model: Any
    processor: Any
    path: Path | None = None

    @property
    def image_processor(self) -> Any:  # type: ignore[override]
        return self.processor.image_processor

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else 0)

    def _max_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(
            [str(t) for t in texts], truncation=True, max_length=self._max_length()
        )["input_ids"]
        return [list(map(int, row)) for row in ids]

    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        # SigLIP was trained with texts padded to a fixed length; CLIP pools at eos.
        padding = "max_length" if "siglip" in type(self.model).__name__.lower() else "longest"
        return self.tokenizer(
            [str(t) for t in texts], padding=padding, truncation=True, return_tensors="pt"
        )

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        return save_hf_model(self.model, self.processor, out_dir)


__all__ = [
    "KINDS",
    "ClipBundle",
    "HfClipBundle",
    "RuClipCheckpointBundle",
    "clip_towers",
    "load_base_model",
]


def load_base_model(spec: dict[str, Any]) -> ClipBundle:
    """Load the CLIP model an ``embeddings.models`` spec names (``type``, ``checkpoint``).

    Raises:
        ValueError: a type other than ``ruclip`` / ``hf_clip`` (it cannot be fine-tuned).
        vitrina.models.ruclip.CheckpointNotFoundError: not local, not downloadable.
    """
    kind = spec.get("type")
    if kind not in ("ruclip", "hf_clip"):
        raise ValueError(f"only ruclip and hf_clip models can be fine-tuned, got type {kind!r}")
    return ClipBundle.load(spec["checkpoint"], kind=kind)
