"""Inference precision of a captioner: fp32, bf16/fp16 weights, or dynamic int8.

Which precision ``auto`` means is decided in one place,
:func:`vitrina.training.precision.inference_precision` (from the CPU flags). ``int8`` is
torch's dynamic int8 (:mod:`vitrina.models.quantization`) on the ViT encoder and on the
GPT-2 decoder, LM head included; generation keeps its key-value cache (the layers are
swapped, ``generate`` is unchanged). The model is loaded in bf16 (half the memory of fp32)
and converted layer by layer, which keeps the peak resident memory of loading low.
"""

from __future__ import annotations

from typing import Any

import torch

from vitrina.models.quantization import is_int8, quantize_int8
from vitrina.training.precision import INFERENCE_PRECISIONS
from vitrina.training.precision import inference_precision as _resolve

PRECISIONS = INFERENCE_PRECISIONS


def inference_precision(precision: str, device: str) -> str:
    """The concrete precision (``fp32``, ``bf16``, ``fp16`` or ``int8``) of a captioner;
    see :func:`vitrina.training.precision.inference_precision` (``auto`` is logged).

    Raises:
        ValueError: unknown precision (naming the allowed ones), int8 on a GPU.
    """
    return _resolve(precision, device, what="captioner")


def inference_dtype(precision: str, device: str) -> torch.dtype:
    """Floating-point dtype the weights are loaded in for ``precision`` (``int8``: bf16,
    then :func:`quantize_captioner_int8` converts them).

    Raises:
        ValueError: unknown precision.
    """
    concrete = inference_precision(precision, device)
    return {
        "fp32": torch.float32,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "int8": torch.bfloat16,
    }[concrete]


def quantize_captioner_int8(model: Any) -> int:
    """Dynamic int8 for the encoder's and the decoder's linear layers (GPT-2 ``Conv1D``s
    and the LM head included), in place; the rest becomes fp32. Inference only.

    Returns:
        The number of layers replaced.

    Raises:
        RuntimeError: torch lacks the x86 quantised engine.
    """
    replaced = quantize_int8(model)
    # The LM head was tied to the token embeddings; it is an int8 copy now, and must stay
    # so (transformers re-ties output embeddings on some calls).
    model.config.tie_word_embeddings = False
    model.config.decoder.tie_word_embeddings = False
    return replaced


__all__ = [
    "PRECISIONS",
    "inference_dtype",
    "inference_precision",
    "is_int8",
    "quantize_captioner_int8",
]
