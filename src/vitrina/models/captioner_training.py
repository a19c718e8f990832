"""Training a :class:`~vitrina.models.captioner.Captioner`: resumable, seeded, validated.

:func:`train_captioner_model` runs AdamW with a linear warmup and a cosine decay
(``transformers.get_cosine_schedule_with_warmup``), mixed precision by autocast on a GPU,
gradient clipping, and teacher-forced validation loss after every epoch. The best epoch
(lowest validation loss) is kept.

Resumption: with a ``checkpoint_dir`` the training state (weights, optimiser, schedule,
position in the epoch, history) is written atomically every ``checkpoint_every_steps``
steps and at the end of every epoch to ``<checkpoint_dir>/state.pt``, and the best model to
``<checkpoint_dir>/best/``. A rerun with the same data and settings continues where the
state stops, and reproduces the uninterrupted run: the batch order of an epoch and every
step's random numbers (dropout, flips) are derived from ``(seed, epoch)`` and
``(seed, step)``, not from a generator's running state. A state written for other data or
settings is ignored (with a warning) and overwritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from vitrina.models.captioner import (
    Captioner,
    auto_threads,
    load_captioner,
    load_image,
    resolve_dtype,
)
from vitrina.training.optim import parameter_groups
from vitrina.utils import atomic_path, limit_threads, resolve_device

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BEST_DIR = "best"
HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "bow_loss",
    "learning_rate",
    "seconds",
    "is_best",
    "sample_caption",
]


@dataclass
class TrainingConfig:
    """``captioning.training`` parameters.

    Attributes:
        epochs: passes over the training split.
        batch_size: images per optimiser step.
        learning_rate: peak AdamW learning rate (after warmup).
        weight_decay: AdamW weight decay (not on biases and norms).
        warmup_ratio: share of all steps spent warming up linearly from 0.
        grad_clip: maximum global gradient norm (0 disables clipping).
        label_smoothing: cross-entropy label smoothing of the training loss (validation
            loss is plain cross-entropy).
        token_dropout: share of the decoder's input tokens (after ``[BOS]``) replaced by
            ``[PAD]`` in training (word dropout, Bowman et al. 2016): the decoder cannot
            lean on the previous words alone and must read the image.
        pretrain_epochs: epochs of encoder pre-training before captioning: the encoder
            alone learns to predict the description's words from the image (the
            bag-of-words loss below). A randomly initialised ViT learns far faster this
            way than through the decoder's cross-attention, and a decoder trained on top
            of an informative encoder reads the image instead of settling for a language
            model (the role the pretrained ViT plays in the seed system). Cheap: no decoder.
        pretrain_learning_rate: peak learning rate of the pre-training (cosine schedule).
        bow_weight: weight of the same bag-of-words loss as an auxiliary loss during
            captioning (0: off).
        hflip: flip training images horizontally with probability 0.5 (augmentation).
        length_bucketing: batch descriptions of similar token length together (within
            shuffled chunks of 50 batches) so less compute goes to padding.
        device: ``auto`` (CUDA when visible) | ``cpu`` | ``cuda[:i]``.
        precision: autocast dtype: ``auto`` (bf16, or fp16 with gradient scaling, on CUDA;
            bf16 on a CPU with bf16 instructions, ~2.5x faster there; fp32 otherwise),
            ``fp32``, ``bf16``, ``fp16``.
        num_threads: torch CPU threads: ``None`` (torch's default), a number, or ``auto``
            (the cores other processes leave idle, see
            :func:`vitrina.models.captioner.auto_threads`; restored afterwards).
        cache_images: preprocess every image once and keep the tensors (float16) in memory;
            otherwise images are decoded again every epoch.
        num_workers: image decoding threads.
        checkpoint_dir: where ``state.pt`` and ``best/`` go (``None``: no resumption, the
            best weights are kept in memory).
        checkpoint_every_steps: also write the state every this many steps (0: only at
            the end of an epoch).
        sample_images: validation images captioned (greedy) after each epoch, recorded in
            the history.
        seed: seed of batch order, augmentation and dropout.
    """

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    token_dropout: float = 0.0
    pretrain_epochs: int = 0
    pretrain_learning_rate: float = 1e-3
    bow_weight: float = 0.0
    hflip: bool = True
    length_bucketing: bool = True
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | str | None = None
    cache_images: bool = True
    num_workers: int = 2
    checkpoint_dir: str | None = None
    checkpoint_every_steps: int = 200
    sample_images: int = 2
    seed: int = 42

    #: Settings that change the result; the others (where, how often) do not.
    RESULT_KEYS = (
        "epochs",
        "batch_size",
        "learning_rate",
        "weight_decay",
        "warmup_ratio",
        "grad_clip",
        "label_smoothing",
        "token_dropout",
        "pretrain_epochs",
        "pretrain_learning_rate",
        "bow_weight",
        "hflip",
        "length_bucketing",
        "precision",
        "seed",
    )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainingConfig:
        """Build from ``captioning.training``.

        Raises:
            ValueError: unknown keys (listed with the known ones) or non-positive sizes.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise ValueError(
                f"Unknown captioning.training keys {unknown}; expected some of {sorted(fields)}"
            )
        config = cls(**params)
        if config.epochs < 1 or config.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be >= 1, got {config.epochs} and {config.batch_size}"
            )
        return config


@dataclass
class TrainingResult:
    """What :func:`train_captioner_model` returns.

    Attributes:
        captioner: the best epoch's captioner (fp32, CPU), ``meta["training"]`` filled.
        history: one row per epoch (:data:`HISTORY_COLUMNS`).
        best_epoch: 1-based epoch of the lowest validation loss.
        best_val_loss: that loss (mean token cross-entropy, nats).
        seconds: training wall time of this call (a resumed run counts its own part).
        resumed_from_step: global step the run resumed from (0 for a fresh start).
        n_truncated: training + validation descriptions cut to ``max_target_length``.
    """

    captioner: Captioner
    history: pd.DataFrame
    best_epoch: int
    best_val_loss: float
    seconds: float
    resumed_from_step: int
    n_truncated: int


# ---------------------------------------------------------------------------- images


class PixelSource:
    """Preprocessed pixels for a list of image files, by index.

    With ``cache=True`` every image is decoded and preprocessed once (thread pool,
    progress bar) into one ``float16 [N, 3, S, S]`` tensor (half the memory of float32;
    values in [-1, 1] keep ~3 decimal digits, finer than the 8-bit source); otherwise
    each request decodes its images again.

    Raises:
        FileNotFoundError, OSError: an image cannot be read (processed images should all
            be readable: image_processing has already dropped the broken ones).
    """

    def __init__(
        self,
        captioner: Captioner,
        paths: Sequence[str],
        *,
        cache: bool = True,
        num_workers: int = 2,
        desc: str = "images",
        progress: bool = True,
    ) -> None:
        self.captioner = captioner
        self.paths = list(paths)
        self.num_workers = max(1, int(num_workers))
        self._cache: torch.Tensor | None = None
        if cache and self.paths:
            chunks = []
            batches = [self.paths[i : i + 64] for i in range(0, len(self.paths), 64)]
            with ThreadPoolExecutor(self.num_workers) as pool:
                for chunk in tqdm(
                    pool.map(self._preprocess, batches),
                    total=len(batches),
                    desc=f"cache {desc}",
                    unit="batch",
                    disable=None if progress else True,
                ):
                    chunks.append(chunk.to(torch.float16))
            self._cache = torch.cat(chunks)

    def _preprocess(self, paths: Sequence[str]) -> torch.Tensor:
        return self.captioner.pixel_values([load_image(p, square=True) for p in paths])

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: np.ndarray) -> torch.Tensor:
        """``float32 [len(index), 3, S, S]`` pixel values."""
        if self._cache is not None:
            return self._cache[torch.as_tensor(index, dtype=torch.long)].float()
        return self._preprocess([self.paths[i] for i in index])


# ---------------------------------------------------------------------------- helpers


def _fingerprint(
    captioner: Captioner, config: TrainingConfig, train_ids: Sequence[str], val_ids: Sequence[str]
) -> str:
    """Hash of everything that determines the training result (data, model, settings)."""
    from vitrina.models.captioner import tokenizer_fingerprint

    payload = {
        "model": captioner.meta.get("config"),
        "max_target_length": captioner.max_target_length,
        "tokenizer": tokenizer_fingerprint(captioner.tokenizer),
        "training": {k: getattr(config, k) for k in TrainingConfig.RESULT_KEYS},
        "train": hashlib.sha256("\n".join(map(str, train_ids)).encode()).hexdigest(),
        "val": hashlib.sha256("\n".join(map(str, val_ids)).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of training (``None``: fp32), by inference's rules
    (:func:`vitrina.models.captioner.resolve_dtype`); ``int8`` is for inference only.

    Raises:
        ValueError: an unknown precision, or ``int8``.
    """
    if precision == "int8":
        raise ValueError("training precision must be auto|fp32|bf16|fp16 (int8 is for inference)")
    dtype = resolve_dtype(precision, device.type)
    return None if dtype == torch.float32 else dtype


def _step_seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def epoch_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, bucketing: bool = True
) -> list[np.ndarray]:
    """The batches (item indices) of one epoch: a function of ``(seed, epoch)`` only.

    Items are shuffled; with ``bucketing`` each chunk of 50 batches is sorted by
    ``lengths`` before it is cut into batches (similar lengths pad less), and the batch
    order is shuffled again.
    """
    rng = np.random.default_rng(_step_seed(seed, epoch))
    order = rng.permutation(len(lengths))
    if not bucketing:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def bag_of_words_targets(
    targets: Sequence[Sequence[int]], vocab_size: int, ignore: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tokens each description contains, and their inverse document frequency.

    Returns:
        ``present`` ``bool [N, V]`` and ``idf`` ``float32 [V]`` (``log((N + 1) / (df + 1))``,
        0 for ``ignore``d ids such as ``[EOS]`` and ``[PAD]``).
    """
    present = torch.zeros((len(targets), vocab_size), dtype=torch.bool)
    for i, ids in enumerate(targets):
        present[i, list(set(ids))] = True
    df = present.sum(0).float()
    idf = torch.log((len(targets) + 1) / (df + 1))
    idf[list(ignore)] = 0.0
    return present, idf


def bag_of_words_loss(
    head: torch.nn.Module, encoded: torch.Tensor, present: torch.Tensor, idf: torch.Tensor
) -> torch.Tensor:
    """IDF-weighted bag-of-words loss (Zhao et al. 2017).

    A softmax over the vocabulary from the mean-pooled encoder output ``[B, N, D]``;
    minus the log-probability of every token the description contains, weighted by its
    IDF (content words such as "jeans" count, "in" and "a" hardly), averaged.
    """
    logp = torch.log_softmax(head(encoded.mean(dim=1)).float(), dim=-1)
    weights = present.to(logp.device, torch.float32) * idf.to(logp.device)
    return -(weights * logp).sum() / weights.sum().clamp(min=1e-6)


def _loss(
    captioner: Captioner,
    pixels: torch.Tensor,
    batch: dict[str, torch.Tensor],
    label_smoothing: float = 0.0,
    bow: tuple[torch.nn.Module, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Mean token cross-entropy of a teacher-forced batch, its token count, and (with
    ``bow = (head, present, idf)``) the :func:`bag_of_words_loss` of the batch."""
    device = captioner.device
    out = captioner.model(
        pixel_values=pixels.to(device),
        decoder_input_ids=batch["decoder_input_ids"].to(device),
        decoder_attention_mask=batch["decoder_attention_mask"].to(device),
    )
    labels = batch["labels"].to(device)
    logits = out.logits.float()
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=-100,
        label_smoothing=float(label_smoothing),
    )
    bow_loss = None
    if bow is not None:
        bow_loss = bag_of_words_loss(bow[0], out.encoder_last_hidden_state, bow[1], bow[2])
    return loss, int((labels != -100).sum()), bow_loss


@torch.no_grad()
def validation_loss(
    captioner: Captioner,
    pixels: PixelSource,
    targets: Sequence[Sequence[int]],
    batch_size: int,
    autocast: torch.dtype | None = None,
) -> float:
    """Teacher-forced mean token cross-entropy (nats) over a whole split."""
    model = captioner.model
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    order = np.argsort([len(t) for t in targets], kind="stable")  # less padding
    for start in range(0, len(targets), batch_size):
        index = order[start : start + batch_size]
        batch = captioner.collate_targets([targets[i] for i in index])
        with _amp(captioner.device.type, autocast):
            loss, n, _ = _loss(captioner, pixels.get(index), batch)
        total += float(loss) * n
        tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


def _amp(device_type: str, dtype: torch.dtype | None) -> Any:
    """Autocast to ``dtype`` on ``device_type``; no autocast for ``None`` (fp32)."""
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _hflip(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images ``[B, 3, H, W]`` (in place; returns them)."""
    flip = torch.rand(len(pixels), generator=generator) < 0.5
    pixels[flip] = pixels[flip].flip(-1)
    return pixels


def _optimiser_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    params: Any,
    grad_clip: float | None,
) -> None:
    """Backward (scaled for fp16), clip the gradient norm, step optimiser and schedule."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip and grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


# ---------------------------------------------------------------------------- training


def train_captioner_model(
    captioner: Captioner,
    train_paths: Sequence[str],
    train_texts: Sequence[str],
    val_paths: Sequence[str],
    val_texts: Sequence[str],
    config: TrainingConfig,
    *,
    train_ids: Sequence[str] | None = None,
    val_ids: Sequence[str] | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingResult:
    """Train ``captioner`` on image files and their descriptions; keep the best epoch.

    Args:
        captioner: a freshly built captioner (fp32); its weights are trained in place.
        train_paths, train_texts: training images (processed, square) and descriptions.
        val_paths, val_texts: validation images and descriptions (loss every epoch).
        config: :class:`TrainingConfig`.
        train_ids, val_ids: stable ids of the items (default: the paths), part of the
            resumption fingerprint.
        progress: tqdm bars (``disable=None``: shown on a terminal only).
        on_step: called with the global step after each optimiser step (and after any
            checkpoint of that step); tests use it to interrupt a run.
        on_epoch: called after every captioning epoch (once its state is written) with its
            history row (:data:`HISTORY_COLUMNS`: ``epoch``, ``val_loss``, ...); an
            exception it raises stops training and propagates (how Optuna prunes a trial;
            with a ``checkpoint_dir`` the run can still be resumed).

    Returns:
        :class:`TrainingResult` with the best epoch's captioner on the CPU in fp32.

    Raises:
        ValueError: empty training or validation split, or paths and texts of different
            lengths.
    """
    with limit_threads(auto_threads(config.num_threads)):  # restored afterwards
        return _train_captioner_model(
            captioner,
            train_paths,
            train_texts,
            val_paths,
            val_texts,
            config,
            train_ids=train_ids,
            val_ids=val_ids,
            progress=progress,
            on_step=on_step,
            on_epoch=on_epoch,
        )


def _train_captioner_model(
    captioner: Captioner,
    train_paths: Sequence[str],
    train_texts: Sequence[str],
    val_paths: Sequence[str],
    val_texts: Sequence[str],
    config: TrainingConfig,
    *,
    train_ids: Sequence[str] | None = None,
    val_ids: Sequence[str] | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingResult:
    """:func:`train_captioner_model` with its thread count already applied."""
    if not len(train_paths) or not len(val_paths):
        raise ValueError(
            f"Captioning needs training and validation items, got {len(train_paths)} and {len(val_paths)}"
        )
    if len(train_paths) != len(train_texts) or len(val_paths) != len(val_texts):
        raise ValueError("paths and texts must have the same length")
    threads = torch.get_num_threads()  # set by train_captioner_model
    device = torch.device(resolve_device(config.device))
    autocast = _autocast_dtype(config.precision, device)
    captioner.model.to(device=device, dtype=torch.float32)
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    fingerprint = _fingerprint(
        captioner, config, train_ids or list(train_paths), val_ids or list(val_paths)
    )

    train_targets, n_trunc_train = captioner.encode_targets(train_texts)
    val_targets, n_trunc_val = captioner.encode_targets(val_texts)
    if n_trunc_train or n_trunc_val:
        logger.warning(
            "captioning: %d training and %d validation descriptions exceed %d tokens and are truncated",
            n_trunc_train,
            n_trunc_val,
            captioner.max_target_length,
        )

    n_train = len(train_targets)
    train_lengths = np.array([len(t) for t in train_targets])
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    from transformers import get_cosine_schedule_with_warmup

    bow_head = bow_present = bow_idf = None
    pre_optimizer = pre_scheduler = None
    if config.bow_weight > 0 or config.pretrain_epochs > 0:
        torch.manual_seed(_step_seed(config.seed, 3_000_017))
        bow_head = torch.nn.Linear(
            int(captioner.model.config.encoder.hidden_size), len(captioner.tokenizer)
        ).to(device)
        tok = captioner.tokenizer
        bow_present, bow_idf = bag_of_words_targets(
            train_targets, len(tok), [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id]
        )
    if config.pretrain_epochs > 0:
        encoder_and_head = torch.nn.ModuleDict(
            {"encoder": captioner.model.encoder, "bow_head": bow_head}
        )
        pre_optimizer = torch.optim.AdamW(
            parameter_groups(encoder_and_head, config.weight_decay),
            lr=config.pretrain_learning_rate,
        )
        pre_total = steps_per_epoch * config.pretrain_epochs
        pre_scheduler = get_cosine_schedule_with_warmup(
            pre_optimizer, int(round(config.warmup_ratio * pre_total)), pre_total
        )
    trained = torch.nn.ModuleDict({"model": captioner.model})
    if bow_head is not None and config.bow_weight > 0:
        trained["bow_head"] = bow_head
    optimizer = torch.optim.AdamW(
        parameter_groups(trained, config.weight_decay), lr=config.learning_rate
    )
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(round(config.warmup_ratio * total_steps)), total_steps
    )
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)

    state: dict[str, Any] = {
        "fingerprint": fingerprint,
        "pretrain_epoch": 0,  # completed encoder pre-training epochs
        "epoch": 0,  # completed epochs
        "step_in_epoch": 0,  # completed steps of the current epoch
        "global_step": 0,
        "history": [],
        "best_val_loss": math.inf,
        "best_epoch": 0,
        "epoch_loss_sum": 0.0,
        "epoch_tokens": 0,
        "epoch_bow_sum": 0.0,
        "finished": False,
    }
    best_weights: dict[str, torch.Tensor] | None = None
    state_path = ckpt_dir / STATE_FILE if ckpt_dir else None
    if state_path is not None and state_path.is_file():
        try:  # tensors and plain data only: no pickled object is ever executed
            saved = torch.load(state_path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"{state_path} holds objects other than tensors and plain data (tampered "
                f"with, or not written by Vitrina), so it is not loaded: delete it to train "
                f"from scratch ({str(exc).splitlines()[0]})"
            ) from exc
        if saved.get("fingerprint") == fingerprint:
            captioner.model.load_state_dict(saved["model"])
            if bow_head is not None:
                bow_head.load_state_dict(saved["bow_head"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            if pre_optimizer is not None:
                pre_optimizer.load_state_dict(saved["pretrain_optimizer"])
                pre_scheduler.load_state_dict(saved["pretrain_scheduler"])
            scaler.load_state_dict(saved["scaler"])
            state = {k: saved[k] for k in state}
            logger.info(
                "captioning: resuming from %s at epoch %d, step %d of %d",
                state_path,
                state["epoch"] + (0 if state["finished"] else 1),
                state["global_step"],
                total_steps,
            )
        else:
            logger.warning(
                "captioning: %s was written for other data or settings; training from scratch",
                state_path,
            )
    resumed_from = int(state["global_step"])

    def save_state() -> None:
        if state_path is None:
            return
        payload = {
            **state,
            "model": captioner.model.state_dict(),
            "bow_head": bow_head.state_dict() if bow_head is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "pretrain_optimizer": pre_optimizer.state_dict() if pre_optimizer else None,
            "pretrain_scheduler": pre_scheduler.state_dict() if pre_scheduler else None,
        }
        with atomic_path(state_path) as tmp:
            torch.save(payload, tmp)

    start = time.perf_counter()
    train_pixels = val_pixels = None
    if not state["finished"]:
        logger.info(
            "captioning: training on %d items, validating on %d; %d epochs x %d steps, batch %d, "
            "device %s (%d CPU threads), autocast %s",
            n_train,
            len(val_targets),
            config.epochs,
            steps_per_epoch,
            config.batch_size,
            device,
            threads,
            autocast or "off",
        )
        train_pixels = PixelSource(
            captioner,
            train_paths,
            cache=config.cache_images,
            num_workers=config.num_workers,
            desc="train",
            progress=progress,
        )
        val_pixels = PixelSource(
            captioner,
            val_paths,
            cache=config.cache_images,
            num_workers=config.num_workers,
            desc="validation",
            progress=progress,
        )
    model = captioner.model
    while state["pretrain_epoch"] < config.pretrain_epochs and not state["finished"]:
        epoch = state["pretrain_epoch"]
        batches = epoch_batches(
            np.zeros(n_train), config.batch_size, config.seed, 1_000 + epoch, bucketing=False
        )
        model.train()
        epoch_start, loss_sum = time.perf_counter(), 0.0
        for k, index in enumerate(
            tqdm(
                batches,
                desc=f"encoder pre-training {epoch + 1}/{config.pretrain_epochs}",
                unit="step",
                disable=None if progress else True,
            )
        ):
            gen = torch.Generator().manual_seed(_step_seed(config.seed, 4_000_037, epoch, k))
            torch.manual_seed(_step_seed(config.seed, 5_000_011, epoch, k))
            pixels = train_pixels.get(index)
            if config.hflip:
                _hflip(pixels, gen)
            with _amp(device.type, autocast):
                encoded = model.encoder(pixel_values=pixels.to(device)).last_hidden_state
                loss = bag_of_words_loss(
                    bow_head, encoded, bow_present[torch.as_tensor(index)], bow_idf
                )
            _optimiser_step(
                loss,
                pre_optimizer,
                pre_scheduler,
                scaler,
                encoder_and_head.parameters(),
                config.grad_clip,
            )
            loss_sum += float(loss.detach())
        state["pretrain_epoch"] = epoch + 1
        logger.info(
            "captioning: encoder pre-training %d/%d bow_loss=%.3f (%.0f s)",
            epoch + 1,
            config.pretrain_epochs,
            loss_sum / max(len(batches), 1),
            time.perf_counter() - epoch_start,
        )
        save_state()

    while state["epoch"] < config.epochs and not state["finished"]:
        epoch = state["epoch"]
        batches = epoch_batches(
            train_lengths, config.batch_size, config.seed, epoch, config.length_bucketing
        )
        model.train()
        epoch_start = time.perf_counter()
        bar = tqdm(
            total=len(batches),
            initial=state["step_in_epoch"],
            desc=f"captioning epoch {epoch + 1}/{config.epochs}",
            unit="step",
            disable=None if progress else True,
        )
        for k in range(state["step_in_epoch"], len(batches)):
            index = batches[k]
            gen = torch.Generator().manual_seed(
                _step_seed(config.seed, 1_000_003, state["global_step"])
            )
            torch.manual_seed(_step_seed(config.seed, 2_000_003, state["global_step"]))
            pixels = train_pixels.get(index)
            if config.hflip:
                _hflip(pixels, gen)
            batch = captioner.collate_targets([train_targets[i] for i in index])
            if config.token_dropout > 0:
                inputs = batch["decoder_input_ids"]
                drop = torch.rand(inputs.shape, generator=gen) < config.token_dropout
                drop[:, 0] = False  # keep [BOS]
                batch["decoder_input_ids"] = inputs.masked_fill(
                    drop, captioner.tokenizer.pad_token_id
                )
            with _amp(device.type, autocast):
                loss, n_tokens, bow = _loss(
                    captioner,
                    pixels,
                    batch,
                    config.label_smoothing,
                    (bow_head, bow_present[torch.as_tensor(index)], bow_idf)
                    if config.bow_weight > 0
                    else None,
                )
            total = loss if bow is None else loss + config.bow_weight * bow
            _optimiser_step(
                total, optimizer, scheduler, scaler, trained.parameters(), config.grad_clip
            )
            loss_value = float(loss.detach())
            state["epoch_loss_sum"] += loss_value * n_tokens
            if bow is not None:
                state["epoch_bow_sum"] += float(bow.detach()) * n_tokens
            state["epoch_tokens"] += n_tokens
            state["step_in_epoch"] = k + 1
            state["global_step"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
            if (
                config.checkpoint_every_steps
                and state["global_step"] % config.checkpoint_every_steps == 0
                and k + 1 < len(batches)
            ):
                save_state()
            if on_step is not None:
                on_step(state["global_step"])
        bar.close()

        val_loss = validation_loss(
            captioner, val_pixels, val_targets, config.batch_size * 2, autocast
        )
        train_loss = state["epoch_loss_sum"] / max(state["epoch_tokens"], 1)
        bow_loss = (
            state["epoch_bow_sum"] / max(state["epoch_tokens"], 1)
            if config.bow_weight > 0
            else None
        )
        is_best = val_loss < state["best_val_loss"]
        samples = []
        if config.sample_images:
            index = np.arange(min(config.sample_images, len(val_paths)))
            samples = captioner.generate(val_pixels.get(index), "greedy")
            model.train()
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "bow_loss": bow_loss,
            "learning_rate": scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - epoch_start,
            "is_best": is_best,
            "sample_caption": " | ".join(samples),
        }
        logger.info(
            "captioning: epoch %d/%d train_loss=%.3f val_loss=%.3f%s%s lr=%.2e (%.0f s) e.g. %r",
            epoch + 1,
            config.epochs,
            train_loss,
            val_loss,
            " (best)" if is_best else "",
            f" bow_loss={bow_loss:.3f}" if bow_loss is not None else "",
            row["learning_rate"],
            row["seconds"],
            samples[0] if samples else "",
        )
        if is_best:
            state["best_val_loss"], state["best_epoch"] = val_loss, epoch + 1
            if ckpt_dir is not None:
                captioner.save(ckpt_dir / BEST_DIR)
            else:
                best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state["history"].append(row)
        state.update(
            epoch=epoch + 1, step_in_epoch=0, epoch_loss_sum=0.0, epoch_tokens=0, epoch_bow_sum=0.0
        )
        state["finished"] = state["epoch"] >= config.epochs
        save_state()
        if on_epoch is not None:
            on_epoch(dict(row))

    seconds = time.perf_counter() - start
    if ckpt_dir is not None and (ckpt_dir / BEST_DIR).is_dir():
        best = load_captioner(ckpt_dir / BEST_DIR, device="cpu", precision="fp32")
    else:
        if best_weights is not None:
            model.load_state_dict(best_weights)
        best = captioner.to("cpu", "fp32")
    best.model.eval()
    history = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS)
    best.meta = {
        **best.meta,
        "training": {
            "best_epoch": int(state["best_epoch"]),
            "best_val_loss": float(state["best_val_loss"]),
            "epochs": int(config.epochs),
            "steps": int(state["global_step"]),
            "n_train": n_train,
            "n_validation": len(val_targets),
            "n_truncated": n_trunc_train + n_trunc_val,
            "fingerprint": fingerprint,
        },
    }
    return TrainingResult(
        captioner=best,
        history=history,
        best_epoch=int(state["best_epoch"]),
        best_val_loss=float(state["best_val_loss"]),
        seconds=seconds,
        resumed_from_step=resumed_from,
        n_truncated=n_trunc_train + n_trunc_val,
    )
