"""Text and image embedders chosen by name in parameters.

An embedder turns product titles and images into L2-normalised ``float32`` matrices.
Types (``embeddings.models.<name>.type`` in ``parameters_embeddings.yml``):

- ``ruclip``: a ruCLIP checkpoint (``bpe.model``, ``config.json``, ``pytorch_model.bin``)
  from a local directory or a hub id, converted on load to ``transformers.CLIPModel``
  (:mod:`vitrina.models.ruclip`).
- ``hf_clip``: any Hugging Face CLIP or SigLIP checkpoint (``AutoModel`` +
  ``AutoProcessor``), hub id or local path.
- ``tfidf_svd``: the scikit-learn reference row: TF-IDF character n-grams + truncated SVD
  (LSA) for text, raw thumbnail pixels + PCA for images
  (:class:`vitrina.models.tfidf_svd.TfidfSvdEmbedder`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from vitrina.utils import resolve_device

logger = logging.getLogger(__name__)

#: ``auto`` and ``int8`` are resolved by :func:`vitrina.training.precision.inference_precision`.
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
#: Texts whose token ids enter :meth:`ClipEmbedder.fingerprint` (a changed vocabulary shows).
_PROBE_TEXTS = ("Платье летнее хлопковое, синее", "Men's slim-fit jeans 32/34", "кроссовки")


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` ([N, D]) divided by their L2 norm, as ``float32``; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file fully decoded as RGB.

    Raises:
        FileNotFoundError, PIL.UnidentifiedImageError, OSError: the file is missing or
            cannot be decoded (the image_processing pipeline has already excluded those).
    """
    with Image.open(path) as img:
        return img.convert("RGB")


def _state_arrays(value: Any) -> list[np.ndarray]:
    """The bytes of one state-dict entry as ``uint8`` arrays: a tensor's raw bytes, a
    quantised tensor's integer values and per-channel (or per-tensor) scales and zero
    points, the members of a tuple (dynamic int8 ``Linear`` packs ``(weight, bias)``), or
    the ``repr`` of anything else (a dtype)."""
    import torch

    if isinstance(value, (tuple, list)):
        return [array for item in value for array in _state_arrays(item)]
    if not isinstance(value, torch.Tensor):
        return [np.frombuffer(repr(value).encode(), dtype=np.uint8)]
    if value.is_quantized:
        if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scales = [value.q_per_channel_scales(), value.q_per_channel_zero_points()]
        else:
            scales = [torch.tensor([value.q_scale()]), torch.tensor([value.q_zero_point()])]
        return [a for t in (value.int_repr(), *scales) for a in _state_arrays(t)]
    return [value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()]


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


class Embedder(ABC):
    """Interface of every embedder: ``fit`` (optional), ``embed_texts``, ``embed_images``."""

    name: str = "embedder"

    def fit(self, texts: Sequence[str], image_paths: Sequence[str | Path]) -> Embedder:
        """Fit unsupervised parts on the catalogue (no labels); pretrained models skip it."""
        return self

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``float32`` ``[N, D]`` L2-normalised text embeddings, in input order."""

    @abstractmethod
    def embed_images(self, image_paths: Sequence[str | Path]) -> np.ndarray:
        """``float32`` ``[N, D]`` L2-normalised image embeddings, in input order."""

    def fingerprint(self) -> str:
        """Hex digest of everything that makes the vectors (weights, fitted parts,
        tokenizer, preprocessing, precision): sharded embeddings reuse a shard only
        under the same fingerprint.

        Raises:
            NotImplementedError: the embedder defines none.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no fingerprint()")


class ClipEmbedder(Embedder):
    """Batched CLIP-family inference (``get_text_features`` / ``get_image_features``).

    Faster than the old ruclip ``Predictor`` loop in three ways that leave the outputs
    unchanged (up to float rounding): texts are sorted by length and padded only to the
    longest text of their batch (with CLIP's causal mask and eos pooling the padding never
    reaches the pooled token); images are decoded and preprocessed by a thread pool a few
    batches ahead of the model; batches are larger (default 64).

    Args:
        model: a ``transformers`` CLIP-like model with ``get_text_features`` and
            ``get_image_features``.
        tokenize: ``list[str] -> dict`` of ``input_ids`` (and ``attention_mask``)
            ``LongTensor [B, L]``.
        preprocess: one RGB ``PIL.Image`` → ``float32`` array ``[3, H, W]`` (normalised).
        batch_size: items per forward pass.
        device: ``auto`` | ``cpu`` | ``cuda[:i]``.
        precision: ``fp32`` | ``bf16`` | ``fp16`` (autocast dtype; ``fp32`` disables it) |
            ``int8`` (CPU: a dynamic int8 copy of the text and image towers,
            :func:`vitrina.models.quantization.int8_copy`; ``model`` itself is unchanged) |
            ``auto`` (chosen from the device and the CPU flags, and logged:
            :func:`vitrina.training.precision.inference_precision`).
        num_workers: image preprocessing threads.
        progress: show tqdm progress bars.
    """

    def __init__(
        self,
        model: Any,
        tokenize: Callable[[list[str]], dict[str, Any]],
        preprocess: Callable[[Image.Image], np.ndarray],
        *,
        batch_size: int = 64,
        device: str = "auto",
        precision: str = "fp32",
        num_workers: int = 2,
        progress: bool = True,
        name: str = "clip",
    ) -> None:
        import torch

        from vitrina.training.precision import inference_precision

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(resolve_device(device))
        precision = inference_precision(precision, str(self.device), what=f"embedder {name}")
        if precision == "int8":
            from vitrina.models.quantization import int8_copy, is_int8

            model = model if is_int8(model) else int8_copy(model.to(self.device).eval())
            self.model = model.eval()
        else:
            self.model = model.to(self.device).eval()
        self.tokenize = tokenize
        self.preprocess = preprocess
        self.batch_size = int(batch_size)
        self.precision = precision
        self.num_workers = max(1, int(num_workers))
        self.progress = progress
        self.name = name

    def to(self, device: str) -> ClipEmbedder:
        """Move the model to ``device`` (``auto`` | ``cpu`` | ``cuda[:i]``); returns self."""
        import torch

        self.device = torch.device(resolve_device(device))
        self.model = self.model.to(self.device)
        return self

    def fingerprint(self) -> str:
        """Digest of the weights (every state-dict tensor's bytes; an int8 model's packed
        weights by their integer values and scales), the token ids of probe texts, the
        pixels of a probe image and the precision."""
        from vitrina.shards import digest

        state = sorted(self.model.state_dict().items())
        tensors = [array for _, v in state for array in _state_arrays(v)]
        ids = self.tokenize(list(_PROBE_TEXTS))["input_ids"]
        ramp = (np.add.outer(np.arange(23), np.arange(37)) * 4).astype(np.uint8)  # 23 x 37 px
        pixels = self.preprocess(Image.fromarray(np.stack([ramp, ramp[::-1], 255 - ramp], -1)))
        return digest(
            type(self.model).__name__,
            self.precision,
            [k for k, _ in state],
            *tensors,
            np.asarray(ids, dtype=np.int64),
            np.asarray(pixels, dtype=np.float32),
        )

    def _autocast(self):
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @staticmethod
    def _features(out: Any) -> Any:
        # transformers 5 returns a model output with the projection in pooler_output.
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = [str(t) for t in texts]
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), 0), dtype=np.float32)
        chunks = []
        with torch.inference_mode(), self._autocast():
            for sl in tqdm(
                list(_batches(len(texts), self.batch_size)),
                desc=f"{self.name} text",
                unit="batch",
                disable=None if self.progress else True,
            ):
                batch = self.tokenize([texts[i] for i in order[sl]])
                batch = {
                    k: v.to(self.device)
                    for k, v in batch.items()
                    if k in ("input_ids", "attention_mask")
                }
                feats = self._features(self.model.get_text_features(**batch))
                chunks.append(feats.float().cpu().numpy())
        if chunks:
            out = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
            out[order] = np.concatenate(chunks)
        return l2_normalise(out)

    def _pixels(self, paths: Sequence[str | Path]) -> np.ndarray:
        return np.stack([self.preprocess(load_rgb(p)) for p in paths])

    def embed_images(self, image_paths: Sequence[str | Path]) -> np.ndarray:
        import torch

        slices = list(_batches(len(image_paths), self.batch_size))
        chunks = []
        # Bounded prefetch: preprocessing of the next batches overlaps the forward pass.
        with ThreadPoolExecutor(self.num_workers) as pool, torch.inference_mode(), self._autocast():
            pending: deque = deque()
            it = iter(slices)
            for sl in it:
                pending.append(pool.submit(self._pixels, image_paths[sl]))
                if len(pending) > self.num_workers:
                    break
            bar = tqdm(
                total=len(image_paths),
                desc=f"{self.name} image",
                unit="img",
                disable=None if self.progress else True,
            )
            while pending:
                pixels = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(self._pixels, image_paths[nxt]))
                pixel_values = torch.from_numpy(pixels).to(self.device)
                feats = self._features(self.model.get_image_features(pixel_values=pixel_values))
                chunks.append(feats.float().cpu().numpy())
                bar.update(len(pixels))
            bar.close()
        if not chunks:
            return np.zeros((0, 0), dtype=np.float32)
        return l2_normalise(np.concatenate(chunks))


def embedder_from_bundle(bundle: Any, settings: dict[str, Any], name: str = "clip") -> ClipEmbedder:
    """Embedder over an already loaded :class:`vitrina.models.clip.ClipBundle` (either
    layout, e.g. a catalogue checkpoint); ``settings`` as :meth:`ClipBundle.embedder`."""
    return bundle.embedder(settings, name)


def _clip(spec: dict[str, Any], settings: dict[str, Any], name: str) -> ClipEmbedder:
    from vitrina.models.clip import ClipBundle

    return ClipBundle.load(spec["checkpoint"], kind=spec["type"]).embedder(settings, name)


def _tfidf_svd(spec: dict[str, Any], settings: dict[str, Any], name: str) -> Embedder:
    from vitrina.models.tfidf_svd import TfidfSvdEmbedder

    return TfidfSvdEmbedder(
        n_components=spec.get("n_components", 256),
        image_side=spec.get("image_side", 16),
        seed=spec.get("seed", 0),
        num_workers=settings.get("num_workers", 2),
        progress=settings.get("progress", True),
    )


EMBEDDER_TYPES: dict[str, Callable[[dict[str, Any], dict[str, Any], str], Embedder]] = {
    "ruclip": _clip,
    "hf_clip": _clip,
    "tfidf_svd": _tfidf_svd,
}


def build_embedder(
    spec: dict[str, Any], settings: dict[str, Any] | None = None, name: str | None = None
) -> Embedder:
    """Build the embedder a model spec names.

    Args:
        spec: ``{"type": "ruclip" | "hf_clip" | "tfidf_svd", "checkpoint": hub id or path,
            ...type options}``.
        settings: ``embeddings`` parameters (``batch_size``, ``device``, ``precision``,
            ``num_workers``).
        name: model name for logs and progress bars.

    Raises:
        ValueError: unknown ``type`` (lists the known ones) or a missing ``checkpoint``.
    """
    settings = settings or {}
    kind = spec.get("type")
    if kind not in EMBEDDER_TYPES:
        raise ValueError(f"Unknown embedder type {kind!r}; known types: {sorted(EMBEDDER_TYPES)}")
    if kind in ("ruclip", "hf_clip") and not spec.get("checkpoint"):
        raise ValueError(
            f"Model {name or kind!r} of type {kind!r} needs a 'checkpoint' (hub id or local path)"
        )
    return EMBEDDER_TYPES[kind](spec, settings, name or kind)
