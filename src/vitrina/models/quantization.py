"""Dynamic int8 for CPU inference: every ``nn.Linear`` (and GPT-2 ``Conv1D``) of a model
becomes torch's dynamically quantised linear layer, run by FBGEMM.

Weights are stored as int8 with one symmetric scale per output channel
(``s = max|w| / 127``, the scheme of torch's ``per_channel_dynamic_qconfig``);
activations stay fp32 between layers and are quantised to uint8 per call from their
observed range (on CPUs without VNNI to 7 bits, ``reduce_range``, so AVX2's 16-bit
``VPMADDUBSW`` sums cannot saturate). Everything else (embeddings, layer norms, attention softmax, the patch
convolution) stays fp32. It is the library path (``torch.ao.nn.quantized.dynamic.Linear``);
only the module swap is ours, so that a model already loaded in bf16 (half the memory)
converts layer by layer, and so that :func:`int8_copy` shares the original's float
weights instead of deep-copying them.

Which models use it, and when ``auto`` picks it, is decided in
:mod:`vitrina.training.precision`.
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

_BLOCK = 4096  # output rows quantised at a time


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or ``None`` where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl, macOS, Windows
        return None


def release_freed_memory() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim(0)``).

    Converting a model layer by layer frees one float weight per layer; glibc keeps such
    blocks in its heap, and whether the next int8 weights reuse them varies from run to
    run. Trimming after each layer keeps the peak resident memory of the conversion at
    the model plus one layer: seed-sized captioner (ViT-B/16 + 6-layer GPT-2, loaded in
    bf16), peak 0.91-0.95 GB over three runs, against 0.96-1.15 GB without.

    Returns:
        Whether memory was returned (``False`` where the C library has no
        ``malloc_trim``).
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def _dynamic_linear_cls() -> type[nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear

    return Linear


@functools.cache
def _int8_linear_cls() -> type[nn.Module]:
    """torch's dynamic int8 ``Linear`` with ``reduce_range`` as an attribute (torch's own
    always quantises activations to 7 bits, which only CPUs without VNNI need)."""

    class DynamicInt8Linear(_dynamic_linear_cls()):
        reduce_range = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.quantized.linear_dynamic(
                x, self._packed_params._packed_params, reduce_range=self.reduce_range
            )
            return y.to(x.dtype)

    return DynamicInt8Linear


def int8_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, reduce_range: bool | None = None
) -> nn.Module:
    """A dynamic int8 linear layer ``y = x @ W.T + b`` for ``weight`` ``float [out, in]``
    (``nn.Linear`` layout, any float dtype) and ``bias`` ``float [out]`` or ``None``.

    Inputs and outputs are fp32 ``[..., in]`` → ``[..., out]``. ``reduce_range``: quantise
    activations to 7 bits; ``None``: only where the CPU lacks VNNI
    (:func:`vitrina.training.precision.cpu_has_vnni`), as onnxruntime and OpenVINO advise.
    8-bit activations on a VNNI CPU measured 3x closer to fp32 (1 - cosine, H&M titles
    through the fine-tuned tiny ruCLIP text tower).
    """
    from vitrina.training.precision import cpu_has_vnni, int8_engine

    engine = int8_engine()
    if engine is None:
        raise RuntimeError("int8 needs torch's x86 quantised engine (fbgemm); this build lacks it")
    torch.backends.quantized.engine = engine
    weight = weight.detach()
    out_features, in_features = weight.shape
    ints = torch.empty((out_features, in_features), dtype=torch.int8)
    scales = torch.empty(out_features, dtype=torch.float64)
    for start in range(0, out_features, _BLOCK):  # blocks: no fp32 copy of a large weight
        block = weight[start : start + _BLOCK].to(torch.float32)
        scale = block.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        ints[start : start + _BLOCK] = torch.round(block / scale[:, None]).clamp(-127, 127)
        scales[start : start + _BLOCK] = scale
    zeros = torch.zeros(out_features, dtype=torch.int64)
    with warnings.catch_warnings():  # torch.ao eager quantisation announces its move to torchao
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(ints, scales, zeros, 0)
        del ints
        layer = _int8_linear_cls()(in_features, out_features, bias_=bias is not None)
    layer.reduce_range = (not cpu_has_vnni()) if reduce_range is None else bool(reduce_range)
    layer.set_weight_bias(qweight, None if bias is None else bias.detach().to(torch.float32))
    return layer


def quantize_int8(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` and ``transformers`` ``Conv1D`` of ``model`` by
    :func:`int8_linear`, in place, one layer at a time (each float weight is freed as its
    int8 copy is made), every ``nn.Embedding`` by :class:`Bf16Embedding`, then cast the
    remaining parameters and buffers to fp32.

    Inference only: the result cannot be trained or saved with ``save_pretrained``.

    Returns:
        The number of layers replaced.

    Raises:
        RuntimeError: torch has no x86 quantised engine.
    """
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        Conv1D = ()  # noqa: N806
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, Conv1D) or type(module) is nn.Linear
    ]
    for name in names:  # by name: no list of the old layers keeps their weights alive
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        module = getattr(parent, child)
        # GPT-2's Conv1D computes x @ W + b with W [in, out]
        weight = module.weight.t() if isinstance(module, Conv1D) else module.weight
        setattr(parent, child, int8_linear(weight, module.bias))
        del module, weight
        release_freed_memory()
    for name, module in list(model.named_modules()):
        if type(module) is nn.Embedding and module.max_norm is None:  # half their memory
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, Bf16Embedding(module))
    model.float()  # fp32 activations everywhere else (the bf16 tables are int16 views)
    return len(names)


class Bf16Embedding(nn.Module):
    """An ``nn.Embedding`` lookup table kept in bf16, returning fp32 rows.

    With int8 linear layers the token embeddings are the largest float tensor left (GPT-2's
    50,257 x 768, ruCLIP's 49,408 x 512); a row lookup does no arithmetic, so bf16 storage
    halves their memory at a relative rounding of 2^-9, far below the int8 layers' error.
    The table is held as an ``int16`` view so that ``Module.float()`` leaves it alone.

    Args:
        embedding: the ``nn.Embedding`` to replace (``padding_idx`` and the rest kept).
    """

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        table = embedding.weight.detach().to(torch.bfloat16).contiguous()
        self.register_buffer("table", table.view(torch.int16))
        self.num_embeddings, self.embedding_dim = table.shape
        self.padding_idx = embedding.padding_idx

    @property
    def weight(self) -> torch.Tensor:
        """The table as ``float32 [num_embeddings, embedding_dim]`` (a copy)."""
        return self.table.view(torch.bfloat16).float()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``int64 [...]`` ids → ``float32 [..., embedding_dim]`` rows."""
        return nn.functional.embedding(ids, self.table).view(torch.bfloat16).float()


def int8_copy(model: nn.Module) -> nn.Module:
    """A dynamic int8 copy of ``model`` (see :func:`quantize_int8`); ``model`` is unchanged.

    The linear weights are shared with ``model`` while the copy is made, never copied as
    floats, so the extra memory is the int8 weights plus the other parameters.
    """
    linear = [m for m in model.modules() if type(m) is nn.Linear]
    memo: dict[int, Any] = {}
    for m in linear:
        memo[id(m.weight)] = m.weight
        if m.bias is not None:
            memo[id(m.bias)] = m.bias
    clone = copy.deepcopy(model, memo)
    quantize_int8(clone)
    return clone


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` holds dynamic int8 layers (:func:`quantize_int8`)."""
    cls = _dynamic_linear_cls()
    return any(isinstance(m, cls) for m in model.modules())


def int8_weights(model: nn.Module) -> int:
    """Number of int8 weights in ``model``'s dynamic int8 layers (from their shapes:
    ``weight()`` would unpack a copy of every packed matrix, and the allocator keeps that
    memory in the process, which showed as 0.13 GB more peak RSS in
    ``benchmarks/captioning.py``)."""
    cls = _dynamic_linear_cls()
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, cls))
