"""Building, saving and loading a captioner, and the model/tokenizer compatibility check.

A captioner is a ``transformers.VisionEncoderDecoderModel`` (ViT encoder, GPT-2-family
decoder with cross-attention), the decoder's tokenizer and the image processor, saved as
one directory::

    config.json, generation_config.json, model.safetensors   the model
    tokenizer.json, tokenizer_config.json                     the tokenizer
    preprocessor_config.json                                  the image processor
    captioner.json                                            Vitrina's record: format,
                                                              preset, target length,
                                                              tokenizer fingerprint, training

Pretrained halves (the seed: ``google/vit-base-patch16-224`` + ``distilbert/distilgpt2``)
come from hub ids or local directories; the others are initialised randomly from the
configured sizes, with a byte-level BPE trained on the training descriptions. Loading
converts the weights tensor by tensor to the requested precision (no fp32 copy).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vitrina.utils import atomic_path, resolve_device

from .configuration import CAPTIONER_FILES, FORMAT_VERSION, META_FILE, CaptionerConfig
from .processing import make_image_processor
from .quantization import inference_dtype, inference_precision, is_int8
from .tokenization import pretrained_tokenizer, tokenizer_fingerprint, train_bpe_tokenizer

if TYPE_CHECKING:
    from .inference import Captioner

logger = logging.getLogger(__name__)


class CaptionerMismatchError(ValueError):
    """The tokenizer and the model of a captioner do not belong together."""


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


def save_captioner(captioner: Captioner, path: str | Path) -> Path:
    """Write ``captioner`` as one directory, atomically (a temporary sibling renamed into
    place).

    Weights are saved in fp32 whatever the in-memory dtype, so every load precision
    starts from full precision.

    Raises:
        ValueError: an int8 captioner (inference only: save the fp32 one).
    """
    if is_int8(captioner.model):
        raise ValueError("an int8 captioner is for inference only: save the fp32 one")
    path = Path(path)
    meta = {
        **captioner.meta,
        "format_version": FORMAT_VERSION,
        "tokenizer_fingerprint": tokenizer_fingerprint(captioner.tokenizer),
        "max_target_length": captioner.max_target_length,
    }
    dtype = captioner.dtype
    with atomic_path(path, is_dir=True) as tmp, quiet_transformers():
        if dtype != torch.float32:
            captioner.model.float()
        try:
            captioner.model.save_pretrained(tmp)
        finally:
            if dtype != torch.float32:
                captioner.model.to(dtype)
        captioner.tokenizer.save_pretrained(tmp)
        captioner.image_processor.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    captioner.meta = meta
    return path


def read_state_dict(file: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
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
        state_dict=read_state_dict(weights, dtype),
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
        precision: ``fp32`` | ``bf16`` | ``fp16`` | ``int8`` (dynamic int8 encoder and
            decoder; CPU inference) | ``auto`` (from the CPU flags, see
            :func:`vitrina.training.precision.inference_precision`); weights load directly
            in that dtype (bf16 for int8), tensor by tensor (no fp32 copy of the model).

    Raises:
        FileNotFoundError: the directory lacks files of :data:`CAPTIONER_FILES`.
        CaptionerMismatchError: its tokenizer is not the one the model was trained with.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    from .inference import Captioner

    path = Path(path)
    missing = [f for f in CAPTIONER_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"'{path}' is not a captioner directory: it lacks {missing} "
            "(train one with `kedro run --pipeline=captioning`)"
        )
    meta = json.loads((path / META_FILE).read_text())
    device = resolve_device(device)
    precision = inference_precision(precision, device)  # auto: logged once, here
    dtype = inference_dtype(precision, device)
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

    from .inference import Captioner

    torch.manual_seed(config.seed)
    source = config.tokenizer_source
    if source == "bpe":
        tokenizer = train_bpe_tokenizer(train_texts, config.vocab_size, config.min_frequency)
    elif source == "decoder":
        if not config.decoder:
            raise ValueError("tokenizer: decoder needs a pretrained decoder (config.decoder)")
        tokenizer = pretrained_tokenizer(str(resolve_pretrained(config.decoder)))
    else:
        tokenizer = pretrained_tokenizer(str(resolve_pretrained(source)))
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


def count_parameters(captioner: Captioner) -> dict[str, int]:
    """Parameters of the encoder, the decoder and the whole model."""
    model = captioner.model
    return {
        "encoder": sum(p.numel() for p in model.encoder.parameters()),
        "decoder": sum(p.numel() for p in model.decoder.parameters()),
        "total": sum(p.numel() for p in model.parameters()),
    }
