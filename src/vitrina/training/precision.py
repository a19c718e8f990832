"""Precision rules shared by every trainer and inference path: the one place where CPU
flags decide a precision.

Training (:func:`resolve_precision`): bf16 is chosen only where the hardware computes it
natively: CUDA devices with bf16 support, and CPUs whose flags include ``avx512_bf16`` or
``amx_bf16``. On a plain AVX2 CPU a bf16 matmul runs at about 0.6 GFLOP/s against about
60 GFLOP/s in fp32 (measured on this project's 2-core EPYC machines), so ``auto`` means
fp32 there.

Inference (:func:`inference_precision`, the captioner and the CLIP towers): ``auto`` also
considers int8 (torch's dynamic quantisation of ``nn.Linear`` through FBGEMM, int8 weights
and int8 activations quantised per call); see that function for the measured choice.

``VITRINA_CPU_FLAGS`` (flags separated by spaces or commas, e.g. ``avx2,fma``) replaces
the flags of ``/proc/cpuinfo``: the benchmarks use it to take another CPU's decisions.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

#: Environment variable that overrides the CPU flags read from ``/proc/cpuinfo``.
CPU_FLAGS_ENV = "VITRINA_CPU_FLAGS"

#: Lightning precision strings a user may ask for (``auto`` resolves to one of them).
LIGHTNING_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")
_ALIASES = {"fp32": "32-true", "32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags: ``$VITRINA_CPU_FLAGS`` when set (spaces or commas between
    flags), else those of ``/proc/cpuinfo`` (Linux); empty where it cannot be read."""
    override = os.environ.get(CPU_FLAGS_ENV, "").strip()
    if override:
        return parse_cpu_flags(override)
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def parse_cpu_flags(text: str) -> frozenset[str]:
    """Flags from a ``/proc/cpuinfo`` ``flags`` value or a list like ``"avx2,fma"``
    (lower-cased; spaces and commas separate)."""
    return frozenset(text.replace(",", " ").lower().split())


def cpu_has_vnni() -> bool:
    """Whether this CPU has int8 dot products into int32 (``avx512_vnni``, ``avx_vnni`` or
    ``amx_int8``). Without them x86 int8 kernels use ``VPMADDUBSW``, whose 16-bit pair sums
    saturate unless activations keep 7 bits (``reduce_range``)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (``avx512_bf16`` or ``amx_bf16``)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_precision(precision: str, accelerator: str) -> str:
    """The Lightning ``precision`` for a requested one on an accelerator.

    Args:
        precision: ``auto``, a Lightning value (``32-true``, ``bf16-mixed``, ``16-mixed``,
            ``bf16-true``) or an alias (``fp32``, ``bf16``, ``fp16``).
        accelerator: ``cpu`` or ``gpu``/``cuda`` (already resolved from ``auto``).

    Returns:
        ``auto`` → ``bf16-mixed`` on a GPU with bf16 (``16-mixed`` on older GPUs) and on a
        CPU with avx512_bf16/AMX, else ``32-true``; other values normalised.

    Raises:
        ValueError: an unknown precision, naming the accepted values.
    """
    value = _ALIASES.get(str(precision), str(precision))
    if value == "auto":
        if accelerator in ("gpu", "cuda"):
            import torch

            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "bf16-mixed" if cpu_has_bf16() else "32-true"
    if value not in LIGHTNING_PRECISIONS:
        raise ValueError(
            f"precision must be 'auto', one of {LIGHTNING_PRECISIONS} or an alias "
            f"{sorted(_ALIASES)}; got {precision!r}"
        )
    return value


#: Inference precisions a user may ask for (``auto`` resolves to one of the others).
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def cpu_inference_precision(flags: Iterable[str]) -> str:
    """The fastest CPU inference precision for a CPU with ``flags``.

    * ``amx_bf16`` → ``bf16`` (AMX tiles run bf16 matmuls at several times the int8 rate
      of FBGEMM, which has no AMX kernels);
    * otherwise → ``int8`` (FBGEMM dynamic int8, ``VPMADDUBSW`` on AVX2, ``VPDPBUSD`` with
      AVX-512 VNNI). With ``avx512_bf16`` too it beat bf16, measured on this project's
      2-core AVX-512 VM (1 thread, ViT-B/16 at 224 px, batch 1): fp32 0.62 s, bf16 0.24 s,
      int8 0.16 s per image; on plain AVX2 bf16 is emulated (~100x slower than fp32) and
      int8 is the only path past the fp32 limit.
    * ``fp32`` where torch has no x86 int8 engine (``fbgemm``/``x86``; e.g. ARM builds).
    """
    flags = frozenset(flags)
    if "amx_bf16" in flags:
        return "bf16"
    return "int8" if int8_engine() else "fp32"


@functools.cache
def int8_engine() -> str | None:
    """torch's x86 quantised engine (``x86`` or ``fbgemm``), or ``None`` when this build
    has neither (then int8 is unavailable)."""
    import torch

    engines = torch.backends.quantized.supported_engines
    return next((e for e in ("x86", "fbgemm") if e in engines), None)


def inference_precision(precision: str, device: str, what: str = "model") -> str:
    """The concrete inference precision (``fp32``, ``bf16``, ``fp16`` or ``int8``).

    Args:
        precision: one of :data:`INFERENCE_PRECISIONS`.
        device: the resolved device (``cpu``, ``cuda``, ``cuda:1`` ...).
        what: the model's name for the log line.

    Returns:
        ``auto`` → on CUDA ``bf16`` (``fp16`` where bf16 is unsupported); on a CPU
        :func:`cpu_inference_precision` of :func:`cpu_flags`. Others unchanged. The choice
        of ``auto`` is logged with the flags that made it.

    Raises:
        ValueError: an unknown precision (naming the accepted ones), or ``int8`` on a GPU
            or without a quantised engine.
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision must be one of {INFERENCE_PRECISIONS}, got {precision!r}")
    cuda = str(device).startswith("cuda")
    if precision == "int8" and (cuda or not int8_engine()):
        raise ValueError(
            "precision int8 (FBGEMM dynamic int8) is for x86 CPUs; "
            + ("use bf16 or fp16 on a GPU" if cuda else "this torch build has no x86 engine")
        )
    if precision != "auto":
        return precision
    if cuda:
        import torch

        chosen, why = ("bf16" if torch.cuda.is_bf16_supported() else "fp16"), "CUDA"
    else:
        flags = cpu_flags()
        chosen = cpu_inference_precision(flags)
        keep = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16")
        why = "CPU flags " + (" ".join(f for f in keep if f in flags) or "none of avx2/avx512/amx")
        if os.environ.get(CPU_FLAGS_ENV, "").strip():
            why += f" (from ${CPU_FLAGS_ENV})"
    logger.info("%s: precision auto -> %s (%s)", what, chosen, why)
    return chosen
