"""The captioner at inference: :class:`Captioner` (targets, generation, persistence) and
:func:`caption_paths` for image files in batches.

Inference is built for CPUs: ``torch.inference_mode``, a key-value cache (greedy:
:mod:`.greedy`'s preallocated one; beam: ``generate``'s; the cross-attention keys/values
are computed once from the image), dynamic int8 encoder and decoder where the CPU
flags say it is the fastest path (:mod:`.quantization`), images batched, the model
loaded once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from vitrina.utils import resolve_device

from . import greedy
from .configuration import DECODINGS
from .modeling import check_compatible, save_captioner
from .processing import load_image
from .quantization import inference_dtype, inference_precision, is_int8, quantize_captioner_int8

#: ``generate`` arguments that :func:`.greedy.greedy_decode` takes.
GREEDY_SETTINGS = (
    "max_new_tokens",
    "decoder_start_token_id",
    "eos_token_id",
    "pad_token_id",
    "min_new_tokens",
    "no_repeat_ngram_size",
    "repetition_penalty",
)


@dataclass
class Captioner:
    """A captioning model with its tokenizer and image processor.

    Attributes:
        model: ``transformers.VisionEncoderDecoderModel`` (ViT encoder, GPT-2 decoder).
        tokenizer: the decoder's tokenizer (``[PAD]``, ``[BOS]``, ``[EOS]``).
        image_processor: ViT image processor (``pixel_values`` ``float32 [B, 3, S, S]``).
        meta: Vitrina's record (``config``, ``max_target_length``, ``tokenizer_fingerprint``,
            ``training``), saved as ``captioner.json``.
        greedy_loop: greedy captions by :func:`.greedy.greedy_decode` where the decoder
            allows it (``False``: transformers' ``generate``, the reference it is tested
            against).

    Raises:
        CaptionerMismatchError: on construction, when tokenizer and model disagree.
    """

    model: Any
    tokenizer: Any
    image_processor: Any
    meta: dict[str, Any] = field(default_factory=dict)
    greedy_loop: bool = True

    def __post_init__(self) -> None:
        check_compatible(self.model, self.tokenizer, self.meta)

    # -- properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16``, ``fp16`` or ``int8`` (dynamic int8 linear layers)."""
        if is_int8(self.model):
            return "int8"
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
            self.dtype, str(self.dtype)
        )

    @property
    def max_target_length(self) -> int:
        """Target tokens per description (``[EOS]`` included), within the decoder context."""
        context = int(getattr(self.model.config.decoder, "n_positions", 1024))
        return min(int(self.meta.get("max_target_length", context)), context)

    def to(self, device: str = "auto", precision: str = "fp32") -> Captioner:
        """Move the model (in place) to ``device`` with ``precision`` weights; returns self.

        ``int8`` (CPU inference only; what ``auto`` picks on CPUs without AMX) quantises
        the encoder and the decoder (:func:`quantize_captioner_int8`).

        Raises:
            ValueError: ``int8`` on a GPU, or another precision for an int8 model.
        """
        device = resolve_device(device)
        precision = inference_precision(precision, device)
        if is_int8(self.model):
            if precision != "int8" or device != "cpu":
                raise ValueError("an int8 captioner stays int8 on the CPU; load it again instead")
            return self
        self.model.to(device=device, dtype=inference_dtype(precision, device))
        if precision == "int8":
            quantize_captioner_int8(self.model)
        return self

    # -- data
    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess RGB images → ``float32`` tensor ``[B, 3, S, S]`` (on the CPU)."""
        out = self.image_processor(images=list(images), return_tensors="pt")
        return out["pixel_values"]

    def encode_targets(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids of each description followed by ``[EOS]``, at most
        :attr:`max_target_length` ids.

        A description longer than that is cut to ``max_target_length`` tokens (no
        ``[EOS]``: the model must not learn to stop mid-sentence) and counted.

        Returns:
            ``(ids, n_truncated)``: one list of ids per text, and how many were truncated.
        """
        limit = self.max_target_length
        eos = self.tokenizer.eos_token_id
        encoded = self.tokenizer(
            [str(t) for t in texts], add_special_tokens=False, return_attention_mask=False
        )["input_ids"]
        out, n_truncated = [], 0
        for ids in encoded:
            if len(ids) + 1 > limit:
                n_truncated += 1
                out.append(list(ids[:limit]))
            else:
                out.append([*ids, eos])
        return out, n_truncated

    def collate_targets(self, targets: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Teacher-forcing tensors for a batch of target ids (from :meth:`encode_targets`).

        Returns:
            ``decoder_input_ids`` ``int64 [B, T]`` (``[BOS]`` + targets[:-1], ``[PAD]``
            padded), ``decoder_attention_mask`` ``int64 [B, T]`` and ``labels``
            ``int64 [B, T]`` (targets, ``-100`` on padding).
        """
        width = max(len(t) for t in targets)
        bos, pad = self.tokenizer.bos_token_id, self.tokenizer.pad_token_id
        inputs = torch.full((len(targets), width), pad, dtype=torch.long)
        labels = torch.full((len(targets), width), -100, dtype=torch.long)
        mask = torch.zeros((len(targets), width), dtype=torch.long)
        for i, ids in enumerate(targets):
            n = len(ids)
            labels[i, :n] = torch.tensor(ids, dtype=torch.long)
            inputs[i, 0] = bos
            inputs[i, 1:n] = torch.tensor(ids[: n - 1], dtype=torch.long)
            mask[i, :n] = 1
        return {"decoder_input_ids": inputs, "decoder_attention_mask": mask, "labels": labels}

    # -- generation
    def generation_kwargs(self, decoding: str = "greedy", **overrides: Any) -> dict[str, Any]:
        """``generate`` arguments for ``greedy`` or ``beam`` decoding.

        Defaults come from ``meta["generation"]`` (set from parameters at build time):
        ``max_new_tokens``, ``num_beams`` (beam only), ``no_repeat_ngram_size``,
        ``repetition_penalty``, ``length_penalty`` (beam only); ``overrides`` win.

        Raises:
            ValueError: unknown decoding.
        """
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
        settings = {
            "max_new_tokens": self.max_target_length,
            "num_beams": 4,
            "no_repeat_ngram_size": 0,
            "repetition_penalty": 1.0,
            "length_penalty": 1.0,
            **(self.meta.get("generation") or {}),
            **overrides,
        }
        kwargs = {
            "max_new_tokens": int(settings["max_new_tokens"]),
            "do_sample": False,
            "num_beams": int(settings["num_beams"]) if decoding == "beam" else 1,
            "use_cache": True,
            "decoder_start_token_id": self.tokenizer.bos_token_id,
            "bos_token_id": self.tokenizer.bos_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if settings.get("min_new_tokens"):
            kwargs["min_new_tokens"] = int(settings["min_new_tokens"])
        if int(settings["no_repeat_ngram_size"] or 0) > 0:
            kwargs["no_repeat_ngram_size"] = int(settings["no_repeat_ngram_size"])
        if float(settings["repetition_penalty"]) != 1.0:
            kwargs["repetition_penalty"] = float(settings["repetition_penalty"])
        if decoding == "beam":
            kwargs["length_penalty"] = float(settings["length_penalty"])
            kwargs["early_stopping"] = True
        return kwargs

    @torch.inference_mode()
    def generate_ids(
        self, pixel_values: torch.Tensor, decoding: str = "greedy", **overrides: Any
    ) -> torch.Tensor:
        """Token ids ``int64 [B, 1 + T]`` (starting with ``[BOS]``) for ``float [B, 3, S, S]``.

        Greedy decoding of a GPT-2 decoder runs :func:`.greedy.greedy_decode` (the same
        tokens as ``generate``, without its per-step overhead); beam search, and other
        decoders, run ``generate``.
        """
        self.model.eval()
        pixel_values = pixel_values.to(self.device, self.dtype)
        kwargs = self.generation_kwargs(decoding, **overrides)
        if self.greedy_loop and kwargs["num_beams"] == 1 and greedy.supports(self.model):
            return greedy.greedy_decode(
                self.model,
                pixel_values,
                **{k: kwargs[k] for k in GREEDY_SETTINGS if k in kwargs},
            )
        return self.model.generate(pixel_values=pixel_values, **kwargs)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Generated ids → captions (special tokens dropped, whitespace normalised)."""
        texts = self.tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def generate(
        self, pixel_values: torch.Tensor, decoding: str = "greedy", **overrides: Any
    ) -> list[str]:
        """Captions for a batch of preprocessed images ``float [B, 3, S, S]``."""
        return self.decode(self.generate_ids(pixel_values, decoding, **overrides))

    def caption_images(
        self, images: Sequence[Image.Image], decoding: str = "greedy", **overrides: Any
    ) -> list[str]:
        """Captions for RGB images (one batch; see :func:`caption_paths` for files)."""
        if not images:
            return []
        return self.generate(self.pixel_values(images), decoding, **overrides)

    # -- persistence
    def save(self, path: str | Path) -> Path:
        """Write the directory atomically (:func:`~.modeling.save_captioner`)."""
        return save_captioner(self, path)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def caption_paths(
    captioner: Captioner,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 16,
    decoding: str | Sequence[str] = "greedy",
    pad_square: bool = True,
    num_workers: int = 1,
    progress: bool = True,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Caption image files in batches; an unreadable file is reported, not fatal.

    Images are decoded (and padded to a square, as image_processing does) by a thread
    pool one batch ahead of the model.

    Args:
        captioner: the loaded captioner (moved to its device/precision beforehand).
        paths: image files.
        batch_size: images per forward pass.
        decoding: ``greedy`` or ``beam``, or several: each image is then read and
            preprocessed once and captioned by each decoding in turn.
        pad_square: pad non-square images to a square on white before resizing.
        num_workers: decoding threads.
        progress: show a tqdm bar (``disable=None``: only on a terminal).
        overrides: generation settings (see :meth:`Captioner.generation_kwargs`).

    Returns:
        One dict per path, in order: ``path``, ``caption`` (``""`` on error), ``status``
        (``ok`` | ``error``), ``error`` (``""`` or the exception's type and message); with
        several decodings ``caption`` is the first one's and ``captions`` maps each
        decoding to its caption.
    """
    decodings = [decoding] if isinstance(decoding, str) else list(decoding)

    def load(batch: Sequence[str | Path]) -> list[Image.Image | Exception]:
        out: list[Image.Image | Exception] = []
        for p in batch:
            try:
                out.append(load_image(p, square=pad_square))
            except Exception as exc:  # missing, truncated, not an image, ...
                out.append(exc)
        return out

    paths = list(paths)
    results: list[dict[str, Any]] = []
    slices = list(_batches(len(paths), max(1, int(batch_size))))
    bar = tqdm(
        total=len(paths),
        desc=f"caption ({', '.join(decodings)})",
        unit="img",
        disable=None if progress else True,
    )
    with ThreadPoolExecutor(max(1, int(num_workers))) as pool:
        pending = pool.submit(load, paths[slices[0]]) if slices else None
        for k, sl in enumerate(slices):
            loaded = pending.result()
            pending = pool.submit(load, paths[slices[k + 1]]) if k + 1 < len(slices) else None
            good = [img for img in loaded if isinstance(img, Image.Image)]
            pixels = captioner.pixel_values(good) if good else None
            per_decoding = {
                d: iter(captioner.generate(pixels, d, **overrides) if good else [])
                for d in decodings
            }
            for path, img in zip(paths[sl], loaded, strict=True):
                if isinstance(img, Image.Image):
                    captions = {d: next(it) for d, it in per_decoding.items()}
                    row = {
                        "path": str(path),
                        "caption": captions[decodings[0]],
                        "status": "ok",
                        "error": "",
                    }
                    if len(decodings) > 1:
                        row["captions"] = captions
                    results.append(row)
                else:
                    results.append(
                        {
                            "path": str(path),
                            "caption": "",
                            "status": "error",
                            "error": f"{type(img).__name__}: {img}",
                        }
                    )
            bar.update(len(loaded))
    bar.close()
    return results
