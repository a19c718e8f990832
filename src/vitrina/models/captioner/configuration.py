"""Captioner configuration: the model sizes (``captioning.models.<name>``) and the
training settings (``captioning.training``: the engine's :class:`~vitrina.training.TrainingConfig`
plus the captioning task's own :class:`CaptioningOptions`).

Constants of the saved directory layout and of decoding live here too, so every other
module of the package reads them from one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vitrina.training import TrainingConfig

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


@dataclass(frozen=True)
class CaptioningOptions:
    """The captioning task's own training settings (beside the engine's).

    Attributes:
        pretrain_max_epochs: epochs of encoder pre-training before captioning: the encoder
            alone learns to predict the description's words from the image (the
            bag-of-words loss of :mod:`.task`). A randomly initialised ViT learns far
            faster this way than through the decoder's cross-attention, and a decoder
            trained on top of an informative encoder reads the image instead of settling
            for a language model (the role the pretrained ViT plays in the seed system).
            0 turns it off.
        pretrain_learning_rate: peak learning rate of the pre-training (cosine schedule).
        label_smoothing: cross-entropy label smoothing of the training loss (the
            validation loss is plain cross-entropy).
        token_dropout: share of the decoder's input tokens (after ``[BOS]``) replaced by
            ``[PAD]`` in training (word dropout, Bowman et al. 2016): the decoder cannot
            lean on the previous words alone and must read the image.
        bow_weight: weight of the bag-of-words loss as an auxiliary loss during
            captioning (0: off).
        hflip: flip training images horizontally with probability 0.5.
        length_bucketing: batch descriptions of similar token length together (within
            shuffled chunks of 50 batches) so less compute goes to padding.
        sample_images: validation images captioned (greedy) after each epoch, logged.
        n_decode_workers: image decoding threads (images are decoded once, before training).
    """

    pretrain_max_epochs: int = 0
    pretrain_learning_rate: float = 1e-3
    label_smoothing: float = 0.0
    token_dropout: float = 0.0
    bow_weight: float = 0.0
    hflip: bool = True
    length_bucketing: bool = True
    sample_images: int = 2
    n_decode_workers: int = 2

    def __post_init__(self) -> None:
        checks = {
            "pretrain_max_epochs": (self.pretrain_max_epochs >= 0, ">= 0"),
            "pretrain_learning_rate": (self.pretrain_learning_rate > 0, "> 0"),
            "label_smoothing": (0 <= self.label_smoothing < 1, "in [0, 1)"),
            "token_dropout": (0 <= self.token_dropout < 1, "in [0, 1)"),
            "bow_weight": (self.bow_weight >= 0, ">= 0"),
            "sample_images": (self.sample_images >= 0, ">= 0"),
            "n_decode_workers": (self.n_decode_workers >= 1, ">= 1"),
        }
        bad = [f"captioning.training.{k}={getattr(self, k)!r} must be {rule}"
               for k, (ok, rule) in checks.items() if not ok]  # fmt: skip
        if bad:
            raise ValueError("; ".join(bad))


#: Old ``captioning.training`` keys and the setting that replaces each.
RENAMED_SETTINGS = {
    "epochs": "max_epochs",
    "pretrain_epochs": "pretrain_max_epochs",
    "lr": "learning_rate",
    "grad_clip": "gradient_clip_val (null turns clipping off)",
    "max_grad_norm": "gradient_clip_val (null turns clipping off)",
    "device": "accelerator (auto | cpu | gpu) and devices",
    "checkpoint_dir": "captioning.output_dir",
    "state_dir": "captioning.output_dir",
    "checkpoint_every_steps": (
        "nothing: the engine checkpoints at the end of every epoch (last.ckpt); remove it"
    ),
    "cache_images": "nothing: images are always decoded once and kept in memory; remove it",
}

#: ``captioning.training`` settings that say where and how fast training runs, not
#: what it learns (left out of the fingerprint; not tuned).
RUNTIME_SETTINGS = frozenset(
    {
        "accelerator",
        "devices",
        "strategy",
        "precision",
        "num_threads",
        "num_workers",
        "n_decode_workers",
        "log_every_n_steps",
        "sample_images",
        "save_top_k",
    }
)


def engine_setting_names() -> list[str]:
    """The :class:`~vitrina.training.TrainingConfig` setting names."""
    return [f.name for f in dataclasses.fields(TrainingConfig) if f.name != "extra"]


def training_settings(
    params: dict[str, Any] | None, where: str = "captioning.training"
) -> tuple[TrainingConfig, CaptioningOptions]:
    """Split ``captioning.training`` into the engine's settings and the task's options.

    ``num_threads`` may be ``auto`` (see :func:`vitrina.training.threads.auto_threads`);
    it is resolved when training starts.

    Raises:
        ValueError: an old key (naming the key that replaces it), an unknown key (naming
            the settings there are), or a value out of range.
    """
    params = dict(params or {})
    old = sorted(k for k in params if k in RENAMED_SETTINGS)
    if old:
        raise ValueError(
            "; ".join(f"{where}.{k} was renamed: use {RENAMED_SETTINGS[k]}" for k in old)
        )
    engine = engine_setting_names()
    task = [f.name for f in dataclasses.fields(CaptioningOptions)]
    unknown = sorted(set(params) - set(engine) - set(task))
    if unknown:
        raise ValueError(
            f"{where}: unknown setting(s) {unknown}; the engine's settings are {engine} "
            f"and the captioning task's {task}"
        )
    threads = params.get("num_threads")
    engine_params = {k: v for k, v in params.items() if k in engine and k != "num_threads"}
    config = TrainingConfig(**engine_params, num_threads=None if threads == "auto" else threads)
    if threads == "auto":
        config = dataclasses.replace(config, extra={"num_threads": "auto"})
    options = CaptioningOptions(**{k: v for k, v in params.items() if k in task})
    return config, options


def settings_dict(config: TrainingConfig, options: CaptioningOptions) -> dict[str, Any]:
    """``captioning.training`` as one flat dict (the inverse of :func:`training_settings`)."""
    flat = {**config.to_dict(), **dataclasses.asdict(options)}
    if config.extra.get("num_threads") == "auto":
        flat["num_threads"] = "auto"
    return flat
