"""The captioner's GPT-2 decoder step as an onnxruntime int8 graph, for single images.

At batch 1 a decoder step is some 150 small operations around 37 int8 matrix-vector
products; in eager PyTorch each costs its dispatch (an int8 ``Linear`` about 19 µs a call
even when tiny), and ``torch.compile`` cannot capture FBGEMM's packed int8 weights (a
graph break at every layer). onnxruntime runs the whole step as one graph. On the
seed-sized captioner (2 cores, interleaved in one run) a caption at batch 1 took 0.308 s
against 0.350 s with the torch int8 loop, with the same tokens; at batch 16 torch was
faster (6.1 against 4.9 images/s), so batches stay with torch. The session adds about
0.15 GB. ``decoder_runtime: onnxruntime`` turns it on (``torch`` is the default).

:class:`DecoderStep` is the exported function: one new token per image against a
key-value cache of fixed length ``T`` (the captioner's ``max_target_length``), the
cross-attention keys and values computed once per image by the torch model. The graph is
exported from the float decoder with the dynamo exporter (dynamic batch axis), then
quantised by onnxruntime's ``quantize_dynamic`` (int8 weights, one scale per output
channel; activations quantised per call). It is cached beside the captioner
(``onnx/decoder_step_int8.onnx`` with a JSON record of the weights' digest), rebuilt when
the weights change, and written atomically.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from vitrina.utils import atomic_path

logger = logging.getLogger(__name__)

FILE = "decoder_step_int8.onnx"
FORMAT_VERSION = 1
INPUTS = ("ids", "pos", "keys", "values", "cross_k", "cross_v")
OUTPUTS = ("logits", "new_k", "new_v")


def available() -> bool:
    """Whether onnxruntime (and the ONNX exporter's ``onnxscript``) can be imported."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


class DecoderStep(nn.Module):
    """One greedy step of a GPT-2 decoder with cross-attention, for export.

    Inputs: ``ids int64 [B, 1]`` (the last token), ``pos int64 [1]`` (its position),
    ``keys``/``values float32 [L, B, H, T, D]`` (the self-attention cache, valid before
    ``pos``), ``cross_k``/``cross_v float32 [L, B, H, S, D]``. Outputs: ``logits float32
    [B, V]``, ``new_k``/``new_v float32 [L, B, H, 1, D]`` (the caller writes them at
    ``pos``). The new key attends to itself beside the cache, so the graph never copies
    the cache.
    """

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.n_head, self.width = decoder.config.n_head, decoder.config.n_embd
        self.gpt, self.head = decoder.transformer, decoder.lm_head
        if self.head.weight is self.gpt.wte.weight:  # tied: onnxruntime would not quantise
            self.head = nn.Linear(self.width, self.head.out_features, bias=False)  # a shared
            self.head.weight = nn.Parameter(decoder.lm_head.weight.detach().clone())  # matrix

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        return x.view(b, 1, self.n_head, self.width // self.n_head).transpose(1, 2)

    def forward(self, ids, pos, keys, values, cross_k, cross_v):  # noqa: D102
        x = self.gpt.wte(ids) + self.gpt.wpe(pos)[None]
        b, scale = ids.shape[0], (self.width // self.n_head) ** -0.5
        past = (torch.arange(keys.shape[3]) < pos).view(1, 1, 1, -1)
        new_k, new_v = [], []
        for i, blk in enumerate(self.gpt.h):
            q, k, v = (self._heads(t) for t in blk.attn.c_attn(blk.ln_1(x)).split(self.width, 2))
            new_k.append(k)
            new_v.append(v)
            cached = ((q @ keys[i].transpose(-1, -2)) * scale).masked_fill(~past, -1e30)
            own = (q * k).sum(-1, keepdim=True) * scale
            w = torch.softmax(torch.cat([cached, own], -1), -1)
            a = w[..., :-1] @ values[i] + w[..., -1:] * v
            x = x + blk.attn.c_proj(a.transpose(1, 2).reshape(b, 1, self.width))
            q = self._heads(blk.crossattention.q_attn(blk.ln_cross_attn(x)))
            w = torch.softmax((q @ cross_k[i].transpose(-1, -2)) * scale, -1)
            a = w @ cross_v[i]
            x = x + blk.crossattention.c_proj(a.transpose(1, 2).reshape(b, 1, self.width))
            x = x + blk.mlp.c_proj(F.gelu(blk.mlp.c_fc(blk.ln_2(x)), approximate="tanh"))
        return self.head(self.gpt.ln_f(x))[:, -1], torch.stack(new_k), torch.stack(new_v)


def fingerprint(decoder: nn.Module, length: int) -> str:
    """Digest of the decoder's weights (values, dtypes, shapes), ``length`` and the format."""
    from vitrina.shards import digest

    parts: list[Any] = ["captioner-decoder-step", FORMAT_VERSION, int(length)]
    for name, tensor in decoder.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        parts += [name, str(data.dtype), list(data.shape), data.view(torch.uint8).numpy()]
    return digest(*parts)


def export_decoder_step(
    decoder: nn.Module, image_tokens: int, length: int, path: str | Path, quantise: bool = True
) -> Path:
    """Write the ONNX graph of :class:`DecoderStep` for a float ``decoder`` (unchanged).

    Args:
        image_tokens: ``S``, the encoder's tokens per image.
        length: ``T``, positions of the self-attention cache.
        quantise: int8 weights (``quantize_dynamic``, per channel); ``False`` keeps fp32.

    Raises:
        ImportError: onnxruntime or onnxscript is missing.
    """
    import copy

    from onnxruntime.quantization import QuantType, quantize_dynamic

    cfg = decoder.config
    step = DecoderStep(copy.deepcopy(decoder).float().eval())
    shape = (cfg.n_layer, 2, cfg.n_head, length, cfg.n_embd // cfg.n_head)
    cross = (cfg.n_layer, 2, cfg.n_head, image_tokens, cfg.n_embd // cfg.n_head)
    example = (
        torch.ones(2, 1, dtype=torch.long),
        torch.tensor([1]),
        torch.zeros(shape),
        torch.zeros(shape),
        torch.randn(cross),
        torch.randn(cross),
    )
    batch = torch.export.Dim("batch", min=1, max=1024)
    dynamic = {"ids": {0: batch}, "pos": None, **{n: {1: batch} for n in INPUTS[2:]}}
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = Path(tmp) / "step.onnx"
        torch.onnx.export(
            step,
            example,
            str(fp32),
            dynamo=True,
            external_data=False,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_shapes=dynamic,
            optimize=True,
            verbose=False,
        )
        del step
        with atomic_path(path) as out:
            if quantise:
                quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
            else:
                out.write_bytes(fp32.read_bytes())
    return path


class OrtDecoderStep:
    """A cached, exported decoder step and its onnxruntime session.

    Attributes:
        length: ``T``, the longest caption (new tokens) the graph takes.
        path: the ONNX file.
    """

    def __init__(self, path: Path, length: int, num_threads: int | None = None) -> None:
        from vitrina.export.runtime import ort_session

        self.path, self.length = Path(path), int(length)
        self.session = ort_session(self.path, num_threads or torch.get_num_threads())

    def steps(self, model: Any, image: torch.Tensor, max_new_tokens: int):
        """A step function ``(last ids [B, 1], pos) → float32 logits [B, V]`` for
        :func:`.greedy.greedy_decode`, the cross-attention keys and values computed once
        from ``image [B, S, C]`` by the torch ``model``."""
        gpt, cfg = model.decoder.transformer, model.decoder.config
        b, s = image.shape[:2]
        heads = lambda t: t.reshape(b, s, cfg.n_head, -1).transpose(1, 2)  # noqa: E731
        kv = [blk.crossattention.c_attn(image).split(cfg.n_embd, 2) for blk in gpt.h]
        feeds = {
            "cross_k": np.ascontiguousarray(torch.stack([heads(k) for k, _ in kv]).float().numpy()),
            "cross_v": np.ascontiguousarray(torch.stack([heads(v) for _, v in kv]).float().numpy()),
        }
        shape = (cfg.n_layer, b, cfg.n_head, self.length, cfg.n_embd // cfg.n_head)
        keys, values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)

        def step(last: torch.Tensor, pos: int) -> torch.Tensor:
            logits, new_k, new_v = self.session.run(
                None,
                {
                    **feeds,
                    "ids": np.ascontiguousarray(last.numpy()),
                    "pos": np.array([pos]),
                    "keys": keys,
                    "values": values,
                },
            )
            keys[:, :, :, pos] = new_k[:, :, :, 0]
            values[:, :, :, pos] = new_v[:, :, :, 0]
            return torch.from_numpy(logits)

        return step


def load_or_export(
    model: Any, length: int, cache_dir: str | Path | None, num_threads: int | None = None
) -> OrtDecoderStep:
    """The int8 decoder step of ``model`` (a float ViT + GPT-2 captioner), from
    ``cache_dir`` when its record matches the weights, else exported there (or into a
    temporary folder, removed once the session has read it, when ``cache_dir`` is
    ``None`` or not writable). Exporting takes a float copy of the decoder and some
    seconds (seed-sized GPT-2: about 30 s); a cached graph loads in under a second.

    Raises:
        ImportError: onnxruntime or onnxscript is missing.
    """
    decoder = model.decoder
    key = fingerprint(decoder, length)
    folder = Path(cache_dir) if cache_dir is not None else None
    if folder is not None:
        record = folder / FILE.replace(".onnx", ".json")
        try:
            if record.is_file() and json.loads(record.read_text()).get("fingerprint") == key:
                if (folder / FILE).is_file():
                    return OrtDecoderStep(folder / FILE, length, num_threads)
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning(
                "cannot write the decoder graph to %s (%s); using a temporary folder", folder, exc
            )
            folder = None
    scratch = None
    if folder is None:  # removed once the session has read the graph
        scratch = tempfile.TemporaryDirectory(prefix="vitrina-decoder-")
        folder = Path(scratch.name)
    image_tokens = (model.config.encoder.image_size // model.config.encoder.patch_size) ** 2 + 1
    logger.info("exporting the captioner's decoder step to onnxruntime int8 in %s", folder)
    export_decoder_step(decoder, image_tokens, length, folder / FILE)
    with atomic_path(folder / FILE.replace(".onnx", ".json")) as tmp:
        tmp.write_text(
            json.dumps({"fingerprint": key, "length": int(length), "format": FORMAT_VERSION})
        )
    step = OrtDecoderStep(folder / FILE, length, num_threads)
    if scratch is not None:
        scratch.cleanup()
    return step


__all__ = ["DecoderStep", "OrtDecoderStep", "available", "export_decoder_step", "load_or_export"]
