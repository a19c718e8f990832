"""Product image captioning: a ViT encoder and a GPT-2 decoder in one directory.

A :class:`Captioner` bundles a ``transformers.VisionEncoderDecoderModel`` (ViT encoder,
GPT-2-family decoder with cross-attention), the decoder's tokenizer (special tokens
``[PAD]``, ``[BOS]``, ``[EOS]`` as in the seed system) and the image processor (square
resize, mean and std 0.5). It saves to and loads from one directory::

    config.json, generation_config.json, model.safetensors   the model
    tokenizer.json, tokenizer_config.json                     the tokenizer
    preprocessor_config.json                                  the image processor
    captioner.json                                            Vitrina's record: format,
                                                              preset, target length,
                                                              tokenizer fingerprint, training

Configurations are named in parameters (``captioning.models``) and parsed by
:class:`CaptionerConfig`:

- a pretrained encoder and decoder (the seed: ``google/vit-base-patch16-224`` +
  ``distilbert/distilgpt2``, hub ids or local directories) with the decoder's own tokenizer
  plus the three special tokens;
- or random initialisation from sizes (the small CPU configuration, the test one); the
  tokenizer is then a byte-level BPE trained on the training descriptions with the
  ``tokenizers`` library (:func:`train_bpe_tokenizer`).

Inference is built for CPUs: ``torch.inference_mode``, the key-value cache of
``generate`` (self-attention keys/values grow by one token a step; the cross-attention
ones are computed once from the image), on CPUs with bf16 instructions a bf16 encoder and
a weight-only int8 decoder (:func:`resolve_precision`, :class:`Int8Linear`), weights
converted tensor by tensor while loading, images batched, and the model loaded once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from vitrina.utils import atomic_path, resolve_device

logger = logging.getLogger(__name__)

__all__ = [
    "CAPTIONER_FILES",
    "Captioner",
    "CaptionerConfig",
    "CaptionerMismatchError",
    "auto_threads",
    "build_captioner",
    "busy_cores",
    "check_compatible",
    "load_captioner",
    "pad_to_square",
    "resolve_dtype",
    "resolve_precision",
    "tokenizer_fingerprint",
    "train_bpe_tokenizer",
]

FORMAT_VERSION = 1
META_FILE = "captioner.json"
#: Files a saved captioner directory always holds.
CAPTIONER_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "preprocessor_config.json",
    META_FILE,
)
#: The seed system's special tokens (``tokenizer`` attribute name: token).
SPECIAL_TOKENS = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
DECODINGS = ("greedy", "beam")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


class CaptionerMismatchError(ValueError):
    """The tokenizer and the model of a captioner do not belong together."""


# ---------------------------------------------------------------------------- config


@dataclass
class CaptionerConfig:
    """One named captioner configuration (``captioning.models.<name>`` in parameters).

    Attributes:
        name: the configuration's name (``seed``, ``small``, ...), recorded in the saved
            directory.
        encoder: hub id or local directory of a pretrained ViT; ``None`` builds a random
            ViT from the ``encoder_*`` sizes.
        decoder: hub id or local directory of a pretrained GPT-2-family model; ``None``
            builds a random GPT-2 from the ``decoder_*`` sizes.
        tokenizer: ``bpe`` (byte-level BPE trained on the training descriptions), ``decoder``
            (the pretrained decoder's tokenizer) or a hub id / local directory; ``auto``
            means ``decoder`` with a pretrained decoder and ``bpe`` otherwise.
        vocab_size: target BPE vocabulary, special tokens included (``bpe`` only; the
            model's vocabulary is the tokenizer's actual size).
        min_frequency: BPE merges need pairs seen at least this often.
        image_size: square input side in pixels (a pretrained encoder's own size wins).
        patch_size, encoder_layers, encoder_width, encoder_heads, encoder_mlp: random ViT.
        decoder_layers, decoder_width, decoder_heads: random GPT-2.
        n_positions: the decoder's context in tokens (random GPT-2).
        max_target_length: target tokens per description, ``[EOS]`` included; longer
            descriptions are truncated (and counted). Capped by the decoder's context.
        dropout: dropout of both random-initialised halves.
        image_mean, image_std: normalisation (the seed: 0.5 and 0.5 per channel).
        seed: initialisation seed.
    """

    name: str = "custom"
    encoder: str | None = None
    decoder: str | None = None
    tokenizer: str = "auto"
    vocab_size: int = 4000
    min_frequency: int = 2
    image_size: int = 224
    patch_size: int = 16
    encoder_layers: int = 4
    encoder_width: int = 256
    encoder_heads: int = 4
    encoder_mlp: int = 1024
    decoder_layers: int = 4
    decoder_width: int = 256
    decoder_heads: int = 4
    n_positions: int = 128
    max_target_length: int = 64
    dropout: float = 0.1
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        for width, heads, part in (
            (self.encoder_width, self.encoder_heads, "encoder"),
            (self.decoder_width, self.decoder_heads, "decoder"),
        ):
            if width % heads:
                raise ValueError(
                    f"{part}_width ({width}) must be a multiple of {part}_heads ({heads})"
                )
        if self.max_target_length < 2:
            raise ValueError(f"max_target_length must be >= 2, got {self.max_target_length}")

    @property
    def tokenizer_source(self) -> str:
        """``bpe``, ``decoder`` or a hub id / directory (``auto`` resolved)."""
        if self.tokenizer == "auto":
            return "decoder" if self.decoder else "bpe"
        return self.tokenizer

    @classmethod
    def from_params(cls, params: dict[str, Any], name: str = "custom") -> CaptionerConfig:
        """Build from a parameters mapping, naming unknown keys.

        Raises:
            ValueError: a key is not a field of this class (the message lists the fields).
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise ValueError(
                f"Unknown captioner configuration keys {unknown} in {name!r}; expected some of {sorted(fields)}"
            )
        return cls(**{"name": name, **dict(params)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def select_config(params: dict[str, Any]) -> CaptionerConfig:
    """The configuration named by ``captioning.model`` among ``captioning.models``.

    Raises:
        KeyError: the name is not configured (the message lists the names that are).
    """
    name = params["model"]
    models = params.get("models") or {}
    if name not in models:
        raise KeyError(f"captioning.model {name!r} is not in captioning.models {sorted(models)}")
    return CaptionerConfig.from_params(models[name] or {}, name=name)


# ---------------------------------------------------------------------------- precision


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (``avx512_bf16`` or ``amx_bf16``).

    Reads ``/proc/cpuinfo`` (Linux); False where it cannot be read.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
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
    if device == "cpu" and cpu_supports_bf16():
        return "int8" if hasattr(torch, "_weight_int8pack_mm") else "bf16"
    return "fp32"


def resolve_dtype(precision: str, device: str) -> torch.dtype:
    """Floating-point dtype of the weights for ``precision`` (``int8``: bf16, the decoder's
    linear layers are then packed by :func:`quantize_decoder_int8`).

    Raises:
        ValueError: unknown precision.
    """
    concrete = resolve_precision(precision, device)
    return {
        "fp32": torch.float32,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "int8": torch.bfloat16,
    }[concrete]


def _cpu_times() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all CPUs from ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    return values[3] + values[4], sum(values)


def busy_cores(window: float = 0.3) -> float:
    """How many cores other work keeps busy now: CPU time used over ``window`` seconds
    (``/proc/stat``), in cores; the 1-minute load average where ``/proc`` is missing.

    The load average lags by minutes (a job that just ended still counts), so it would
    leave idle cores unused; a short sample sees the machine as it is.
    """
    cores = os.cpu_count() or 1
    try:
        idle0, total0 = _cpu_times()
        time.sleep(window)
        idle1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        try:
            return float(os.getloadavg()[0])
        except OSError:
            return 0.0
    if total1 <= total0:
        return 0.0
    return cores * (1.0 - (idle1 - idle0) / (total1 - total0))


def auto_threads(num_threads: int | str | None) -> int | None:
    """Torch CPU threads for ``num_threads``: ``None`` (torch's default, unchanged), a
    number, or ``auto``: the cores left idle by other processes (``cpu_count -
    busy_cores()``, rounded, at least 1, at most torch's default). On a shared machine,
    threads that wait for busy cores make every matmul many times slower than a single
    thread. Apply it for a block with :func:`vitrina.utils.limit_threads`.
    """
    if num_threads == "auto":
        cores = os.cpu_count() or 1
        return max(1, min(torch.get_num_threads(), int(cores - busy_cores() + 0.5)))
    return int(num_threads) if num_threads else None


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


def _is_int8(model: Any) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())


# ---------------------------------------------------------------------------- tokenizer


def train_bpe_tokenizer(
    texts: Sequence[str], vocab_size: int = 4000, min_frequency: int = 2
) -> Any:
    """A byte-level BPE (GPT-2 style) trained on ``texts`` with the ``tokenizers`` library.

    Ids 0, 1, 2 are ``[PAD]``, ``[BOS]``, ``[EOS]``; the 256 byte symbols follow, so any
    text encodes (no unknown token). Encoding adds no special token: the captioner adds
    ``[BOS]``/``[EOS]`` itself. Deterministic for the same texts and settings.

    Args:
        texts: training descriptions.
        vocab_size: target vocabulary size, special tokens included (the result may be
            smaller on a small corpus; at least 259).
        min_frequency: minimum pair count for a merge.

    Returns:
        A ``transformers`` fast tokenizer (``TokenizersBackend``) with pad/bos/eos set.

    Raises:
        ValueError: no text to train on.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in (str(x) for x in texts) if t.strip()]
    if not texts:
        raise ValueError("train_bpe_tokenizer needs at least one non-empty text")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(int(vocab_size), 259),
        min_frequency=int(min_frequency),
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def _pretrained_tokenizer(name_or_path: str) -> Any:
    """A pretrained tokenizer with the seed's ``[PAD]``/``[BOS]``/``[EOS]`` tokens added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    tokenizer.add_special_tokens(dict(SPECIAL_TOKENS))
    return tokenizer


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 (16 hex chars) of the tokenizer's vocabulary and special token ids.

    Two tokenizers with the same fingerprint map every token to the same id, so a model
    trained with one decodes correctly with the other.
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    payload = json.dumps(
        {
            "vocab": vocab,
            "special": [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id],
        },
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------- images


def pad_to_square(image: Image.Image, background: Sequence[int] = (255, 255, 255)) -> Image.Image:
    """Pad ``image`` to a square on ``background``, centred (image_processing's ``pad`` mode).

    Square images are returned unchanged.
    """
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)  # no resampling: the image keeps its pixels, only borders are added
    return ImageOps.pad(image, (side, side), color=tuple(int(c) for c in background))


def load_image(path: str | Path, square: bool = True) -> Image.Image:
    """Open an image file as RGB, fully decoded, padded to a square when ``square``.

    Raises:
        FileNotFoundError: the file is missing.
        PIL.UnidentifiedImageError, OSError: the file is not a decodable image.
    """
    with Image.open(path) as img:
        img = img.convert("RGB")
    return pad_to_square(img) if square else img


def make_image_processor(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    """ViT image processor (PIL backend, no torchvision): resize to a square, rescale to
    [0, 1], normalise with ``mean``/``std``; output ``float32 [B, 3, S, S]``."""
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": int(image_size), "width": int(image_size)},
        resample=Image.Resampling.BILINEAR,
        do_rescale=True,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
    )


# ---------------------------------------------------------------------------- captioner


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own progress bars (weights loading/writing) inside the block."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def check_compatible(model: Any, tokenizer: Any, meta: dict[str, Any] | None = None) -> None:
    """Fail clearly when ``tokenizer`` does not belong to ``model``.

    Checks that the tokenizer's size equals the decoder's vocabulary, that its
    ``[PAD]``/``[BOS]``/``[EOS]`` ids are the ones the model generates with, and, when
    ``meta`` records one, that its fingerprint is the one the model was trained with.

    Raises:
        CaptionerMismatchError: naming what differs (sizes, ids or fingerprints).
    """
    vocab = int(model.config.decoder.vocab_size)
    problems = []
    if len(tokenizer) != vocab:
        problems.append(f"tokenizer has {len(tokenizer)} tokens, the decoder {vocab}")
    expected = {
        "pad": model.config.pad_token_id,
        "bos (decoder start)": model.config.decoder_start_token_id,
        "eos": model.config.eos_token_id,
    }
    given = {
        "pad": tokenizer.pad_token_id,
        "bos (decoder start)": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
    }
    for key, want in expected.items():
        if want is None or given[key] != want:
            problems.append(f"{key} id: model {want}, tokenizer {given[key]}")
    recorded = (meta or {}).get("tokenizer_fingerprint")
    if recorded and not problems:
        actual = tokenizer_fingerprint(tokenizer)
        if actual != recorded:
            problems.append(f"tokenizer fingerprint {actual}, model trained with {recorded}")
    if problems:
        raise CaptionerMismatchError(
            "The tokenizer and the captioning model do not belong together: "
            + "; ".join(problems)
            + ". Save and load them as one directory (Captioner.save / load_captioner)."
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

    Raises:
        CaptionerMismatchError: on construction, when tokenizer and model disagree.
    """

    model: Any
    tokenizer: Any
    image_processor: Any
    meta: dict[str, Any] = field(default_factory=dict)

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
        """``fp32``, ``bf16``, ``fp16`` or ``int8`` (bf16 encoder, int8 decoder)."""
        if _is_int8(self.model):
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

        ``int8`` (CPU inference only; what ``auto`` picks on CPUs with bf16 instructions)
        quantises the decoder (:func:`quantize_decoder_int8`).

        Raises:
            ValueError: ``int8`` on a GPU, or another precision for an int8 model.
        """
        device = resolve_device(device)
        precision = resolve_precision(precision, device)
        if _is_int8(self.model):
            if precision != "int8" or device != "cpu":
                raise ValueError("an int8 captioner stays int8 on the CPU; load it again instead")
            return self
        self.model.to(device=device, dtype=resolve_dtype(precision, device))
        if precision == "int8":
            if device != "cpu":
                raise ValueError("precision int8 is for CPU inference; use bf16 or fp16 on a GPU")
            quantize_decoder_int8(self.model)
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
        """Token ids ``int64 [B, 1 + T]`` (starting with ``[BOS]``) for ``float [B, 3, S, S]``."""
        self.model.eval()
        pixel_values = pixel_values.to(self.device, self.dtype)
        return self.model.generate(
            pixel_values=pixel_values, **self.generation_kwargs(decoding, **overrides)
        )

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
        """Write the directory atomically (a temporary sibling renamed into place).

        Weights are saved in fp32 whatever the in-memory dtype, so every load precision
        starts from full precision.
        """
        if _is_int8(self.model):
            raise ValueError("an int8 captioner is for inference only: save the fp32 one")
        path = Path(path)
        meta = {
            **self.meta,
            "format_version": FORMAT_VERSION,
            "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer),
            "max_target_length": self.max_target_length,
        }
        dtype = self.dtype
        with atomic_path(path, is_dir=True) as tmp, quiet_transformers():
            if dtype != torch.float32:
                self.model.float()
            try:
                self.model.save_pretrained(tmp)
            finally:
                if dtype != torch.float32:
                    self.model.to(dtype)
            self.tokenizer.save_pretrained(tmp)
            self.image_processor.save_pretrained(tmp)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        self.meta = meta
        return path


def _read_state_dict(file: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file converted to ``dtype`` one at a time.

    The file is opened (memory-mapped) anew for every tensor, so at most one source
    tensor is resident besides the converted ones: loading fp32 weights as bf16 peaks at
    the bf16 size plus the largest tensor, not at fp32 + bf16.
    """
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as fh:
        keys = list(fh.keys())
    out = {}
    for key in keys:
        with safe_open(str(file), framework="pt") as fh:
            tensor = fh.get_tensor(key)
            out[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor.clone()
        del tensor
    return out


def _load_model(path: Path, dtype: torch.dtype) -> Any:
    """``VisionEncoderDecoderModel`` from ``path`` with ``dtype`` weights, memory-lean."""
    from transformers import AutoConfig, GenerationConfig, VisionEncoderDecoderModel

    weights = path / "model.safetensors"
    if not weights.is_file():  # sharded or other layouts: let transformers handle them
        return VisionEncoderDecoderModel.from_pretrained(path, dtype=dtype)
    model = VisionEncoderDecoderModel.from_pretrained(
        None,
        config=AutoConfig.from_pretrained(path),
        state_dict=_read_state_dict(weights, dtype),
        dtype=dtype,
    )
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model


def load_captioner(path: str | Path, device: str = "cpu", precision: str = "fp32") -> Captioner:
    """Load a directory written by :meth:`Captioner.save`.

    Args:
        path: the captioner directory.
        device: ``cpu`` | ``cuda[:i]`` | ``auto``.
        precision: ``fp32`` | ``bf16`` | ``fp16`` | ``int8`` (bf16 encoder, int8 decoder;
            CPU inference) | ``auto`` (see :func:`resolve_precision`); weights load directly
            in that dtype, tensor by tensor (no fp32 copy of the model).

    Raises:
        FileNotFoundError: the directory lacks files of :data:`CAPTIONER_FILES`.
        CaptionerMismatchError: its tokenizer is not the one the model was trained with.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    path = Path(path)
    missing = [f for f in CAPTIONER_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"'{path}' is not a captioner directory: it lacks {missing} "
            "(train one with `kedro run --pipeline=captioning`)"
        )
    meta = json.loads((path / META_FILE).read_text())
    device = resolve_device(device)
    dtype = resolve_dtype(precision, device)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = _load_model(path, dtype).to(device).eval()
        image_processor = AutoImageProcessor.from_pretrained(path)
    captioner = Captioner(
        model=model, tokenizer=tokenizer, image_processor=image_processor, meta=meta
    )
    return captioner.to(device, precision)


def resolve_pretrained(name_or_path: str) -> Path:
    """A local directory, or the local copy of an ``org/name`` hub id (cached or downloaded).

    Raises:
        ValueError: ``name_or_path`` is neither a directory nor an ``org/name`` id.
        vitrina.models.ruclip.CheckpointNotFoundError: the id is not cached and cannot be
            downloaded (offline); the message says how to pass a local directory instead.
    """
    from vitrina.models.ruclip import resolve_checkpoint

    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local
    if "/" not in str(name_or_path):
        raise ValueError(
            f"{name_or_path!r} is neither a local directory nor an 'org/name' hub id "
            "(e.g. 'distilbert/distilgpt2', 'google/vit-base-patch16-224')"
        )
    return resolve_checkpoint(name_or_path, required_files=None)


def build_captioner(
    config: CaptionerConfig,
    train_texts: Sequence[str],
    generation: dict[str, Any] | None = None,
) -> Captioner:
    """A new (untrained) captioner for ``config``.

    Pretrained halves come from hub ids or local directories (the seed); missing ones are
    initialised randomly from the configured sizes with ``config.seed``. With a random
    decoder the tokenizer is a byte-level BPE trained on ``train_texts``.

    Args:
        config: the captioner configuration.
        train_texts: training descriptions (train the BPE tokenizer).
        generation: default decoding settings stored with the model (see
            :meth:`Captioner.generation_kwargs`).

    Raises:
        vitrina.models.ruclip.CheckpointNotFoundError: a pretrained id is neither a local
            directory, cached, nor downloadable.
    """
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTModel,
    )

    torch.manual_seed(config.seed)
    source = config.tokenizer_source
    if source == "bpe":
        tokenizer = train_bpe_tokenizer(train_texts, config.vocab_size, config.min_frequency)
    elif source == "decoder":
        if not config.decoder:
            raise ValueError("tokenizer: decoder needs a pretrained decoder (config.decoder)")
        tokenizer = _pretrained_tokenizer(str(resolve_pretrained(config.decoder)))
    else:
        tokenizer = _pretrained_tokenizer(str(resolve_pretrained(source)))
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }

    if config.encoder:
        where = resolve_pretrained(config.encoder)
        encoder = ViTModel.from_pretrained(where)
        image_size = int(encoder.config.image_size)
        logger.info("captioner: encoder %s from %s", config.encoder, where)
    else:
        image_size = config.image_size
        encoder = ViTModel(
            ViTConfig(
                image_size=image_size,
                patch_size=config.patch_size,
                hidden_size=config.encoder_width,
                num_hidden_layers=config.encoder_layers,
                num_attention_heads=config.encoder_heads,
                intermediate_size=config.encoder_mlp,
                hidden_dropout_prob=config.dropout,
                attention_probs_dropout_prob=config.dropout,
            )
        )
    if config.decoder:
        where = resolve_pretrained(config.decoder)
        decoder = GPT2LMHeadModel.from_pretrained(where, add_cross_attention=True, is_decoder=True)
        decoder.resize_token_embeddings(len(tokenizer))
        decoder.config.update(ids)
        logger.info("captioner: decoder %s from %s", config.decoder, where)
    else:
        decoder = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(tokenizer),
                n_positions=config.n_positions,
                n_embd=config.decoder_width,
                n_layer=config.decoder_layers,
                n_head=config.decoder_heads,
                resid_pdrop=config.dropout,
                embd_pdrop=config.dropout,
                attn_pdrop=config.dropout,
                add_cross_attention=True,
                is_decoder=True,
                **ids,
            )
        )
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    gen = model.generation_config
    gen.decoder_start_token_id = tokenizer.bos_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    processor = make_image_processor(image_size, config.image_mean, config.image_std)
    context = int(model.config.decoder.n_positions)
    if config.max_target_length > context:
        logger.warning(
            "captioner: max_target_length %d exceeds the decoder context %d; using %d",
            config.max_target_length,
            context,
            context,
        )
    meta = {
        "config": config.to_dict(),
        "max_target_length": min(config.max_target_length, context),
        "generation": dict(generation or {}),
    }
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "captioner %s: %.1fM parameters, image %dx%d, vocabulary %d (%s tokenizer)",
        config.name,
        n_params / 1e6,
        image_size,
        image_size,
        len(tokenizer),
        source,
    )
    return Captioner(model=model, tokenizer=tokenizer, image_processor=processor, meta=meta)


# ---------------------------------------------------------------------------- batch captioning


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


def count_parameters(captioner: Captioner) -> dict[str, int]:
    """Parameters of the encoder, the decoder and the whole model."""
    model = captioner.model
    return {
        "encoder": sum(p.numel() for p in model.encoder.parameters()),
        "decoder": sum(p.numel() for p in model.decoder.parameters()),
        "total": sum(p.numel() for p in model.parameters()),
    }
