"""Inference precision of a captioner: bf16/fp16 weights, and a weight-only int8 decoder.

Which precision ``auto`` means follows the project's rules
(:func:`vitrina.training.precision.cpu_has_bf16`): bf16 only where the CPU computes it
natively; ``int8`` is the captioner's own inference-only addition (gpt-fast's CPU kernel).
"""

from __future__ import annotations

from typing import Any

import torch

from vitrina.training.precision import cpu_has_bf16

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def inference_precision(precision: str, device: str) -> str:
    """The concrete inference precision (``fp32``, ``bf16``, ``fp16`` or ``int8``).

    ``auto``: on a CUDA device bf16 (fp16 where bf16 is unsupported); on a CPU with bf16
    instructions ``int8`` (bf16 encoder, weight-only int8 decoder: bf16 matmuls there are
    several times faster than fp32, and int8 weights halve what every decoding step reads;
    same SacreBLEU as bf16 on H&M), or bf16 where torch lacks the int8 kernel; fp32 on
    other CPUs.

    Raises:
        ValueError: unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "cpu" and cpu_has_bf16():
        return "int8" if hasattr(torch, "_weight_int8pack_mm") else "bf16"
    return "fp32"


def inference_dtype(precision: str, device: str) -> torch.dtype:
    """Floating-point dtype of the weights for ``precision`` (``int8``: bf16, the decoder's
    linear layers are then packed by :func:`quantize_decoder_int8`).

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


#: ``torch._weight_int8pack_mm`` gives wrong results or crashes unless the input width is
#: a multiple of this (checked on torch 2.13, CPU); other layers stay bf16.
INT8_IN_MULTIPLE = 16


class Int8Linear(torch.nn.Module):
    """Weight-only int8 linear layer for CPU inference: ``y = x @ (q * s).T + b``.

    ``q`` holds int8 weights ``[out, in]`` with one scale per output row
    (``s = max|w| / 127``); activations stay bf16. At batch 1 a decoder step reads every
    weight once, so halving the bytes (bf16 → int8) nearly halves its time; the kernel
    is torch's ``_weight_int8pack_mm`` (the one gpt-fast uses on CPUs).

    Args:
        weight: ``float [out, in]`` (``nn.Linear`` layout).
        bias: ``float [out]`` or ``None``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        if weight.shape[1] % INT8_IN_MULTIPLE:
            raise ValueError(
                f"Int8Linear needs in_features divisible by {INT8_IN_MULTIPLE}, got {weight.shape[1]}"
            )
        weight = weight.detach()
        quantised = torch.empty(weight.shape, dtype=torch.int8)
        scales = torch.empty(weight.shape[0], dtype=torch.float32)
        for start in range(0, weight.shape[0], 4096):  # blocks: no fp32 copy of it all
            block = weight[start : start + 4096].float()
            scale = block.abs().amax(dim=1).clamp(min=1e-8) / 127.0
            quantised[start : start + 4096] = (block / scale[:, None]).round().clamp(-127, 127)
            scales[start : start + 4096] = scale
        self.register_buffer("weight", quantised)
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer(
            "bias", None if bias is None else bias.detach().to(torch.bfloat16).contiguous()
        )
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).to(torch.bfloat16).contiguous()
        out = torch._weight_int8pack_mm(flat, self.weight, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)


def quantize_decoder_int8(model: Any) -> int:
    """Replace the decoder's linear layers (GPT-2 ``Conv1D``s, the LM head) by
    :class:`Int8Linear`, in place; the encoder stays bf16 (it is compute-bound, not
    memory-bound). Inference only: such a model cannot be trained or saved.

    Returns:
        The number of layers replaced.

    Raises:
        RuntimeError: this torch build lacks the int8 kernel.
    """
    from transformers.pytorch_utils import Conv1D

    if not hasattr(torch, "_weight_int8pack_mm"):
        raise RuntimeError("precision int8 needs torch._weight_int8pack_mm (torch >= 2.3)")
    replaced = 0
    for name, module in list(model.decoder.named_modules()):
        if isinstance(module, Conv1D):  # y = x @ W + b with W [in, out]
            weight = module.weight.t()
        elif isinstance(module, torch.nn.Linear):
            weight = module.weight
        else:
            continue
        if weight.shape[1] % INT8_IN_MULTIPLE:
            continue  # the kernel needs in_features % 16 == 0 (else wrong results or a crash)
        new = Int8Linear(weight, module.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(
            model.decoder.get_submodule(parent_name) if parent_name else model.decoder, child, new
        )
        replaced += 1
    return replaced


def is_int8(model: Any) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())
