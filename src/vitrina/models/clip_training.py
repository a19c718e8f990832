"""Contrastive fine-tuning of CLIP models (ruCLIP or Hugging Face) on image–title pairs.

The training code behind the ``clip_finetune`` pipeline, usable on its own:

* :func:`contrastive_loss`: CLIP's symmetric InfoNCE loss (Radford et al. 2021, fig. 3), with
  optional multi-positive targets for duplicate images or identical titles in a batch;
* :func:`retrieval_metrics`: text→image and image→text recall@k, median rank and the
  chance level of each recall;
* :func:`parameter_groups` (AdamW without weight decay on biases, norms and embeddings),
  :class:`WarmupCosine` (linear warm-up, cosine decay), :func:`freeze_parameters`;
* :class:`ClipAdapter`, :class:`PairData`, :func:`pair_data_from_frame`: tokenised titles
  and preprocessed images for any CLIP bundle;
* :func:`train_clip`: the seeded, resumable training loop (gradient accumulation and
  clipping, autocast, validation recall every epoch, best checkpoint, early stopping,
  checkpoints of model + optimiser + scheduler + RNG + step, data parallelism when the
  process group is initialised by ``torchrun``, see :mod:`vitrina.models.clip_launch`).

Tensor conventions: embeddings are ``[N, D]`` float tensors; batches hold ``input_ids`` and
``attention_mask`` ``LongTensor [B, L]`` (padded to the longest title of the batch) and
``pixel_values`` ``float32 [B, 3, R, R]`` (normalised with the checkpoint's mean/std).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import set_seed

from vitrina.utils import atomic_path, limit_threads, resolve_device

logger = logging.getLogger(__name__)

__all__ = [
    "ClipAdapter",
    "NonFiniteLossError",
    "PairData",
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "chance_recall",
    "contrastive_loss",
    "epoch_batches",
    "evaluate_retrieval",
    "freeze_parameters",
    "pair_data_from_frame",
    "parameter_groups",
    "retrieval_metrics",
    "retrieval_ranks",
    "train_clip",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STATE_FILE = "state.pt"
#: Checkpoint format version (bumped when the payload changes incompatibly).
STATE_FORMAT = 1


class NonFiniteLossError(FloatingPointError):
    """The training loss (or gradient norm) became NaN or infinite; training stopped."""


# ---------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_clip` (``clip_finetune.train`` in the parameters).

    Defaults follow the seed system (2 epochs, batch 32, lr 6e-5, AdamW) and the CLIP
    paper (Radford et al. 2021: AdamW betas (0.9, 0.98), eps 1e-6, weight decay 0.2,
    warm-up then cosine decay, learnable temperature clamped so the logit scale is at
    most 100).

    Attributes:
        epochs: passes over the training pairs.
        batch_size: pairs per forward pass *in total over all processes* (each of the
            ``W`` data-parallel processes takes ``batch_size / W``); the in-batch negatives
            are the other ``batch_size - 1`` pairs.  Must be >= 2.
        grad_accum_steps: micro-batches whose gradients are summed per optimiser step
            (negatives stay within a micro-batch).
        lr: peak learning rate.
        weight_decay: AdamW decay of weight matrices (never of biases, norms, embeddings).
        betas, eps: AdamW.
        warmup_steps: linear warm-up length in optimiser steps; ``None`` uses
            ``warmup_ratio`` of all steps.
        min_lr_ratio: learning rate at the end of the cosine, as a fraction of ``lr``.
        max_grad_norm: clip the global gradient L2 norm to this; ``None`` disables.
        precision: ``auto`` (bf16 autocast on a GPU that supports it, else fp16 with a
            gradient scaler; fp32 on a CPU), ``fp32``, ``bf16``, ``fp16``.
        freeze_text, freeze_vision: freeze a whole tower (with its projection).
        train_last_n_blocks: train only the last N transformer blocks of each tower that
            is not frozen (plus final norms, projections, logit scale); ``None`` trains all.
        max_logit_scale: upper clamp of ``exp(logit_scale)`` (CLIP: 100).
        patience: stop after this many epochs without a mean-recall gain of more than
            ``min_delta``; ``None`` never stops early.
        recall_ks: the k of recall@k (the validation split needs at least ``max(k)``
            pairs).
        match_duplicates: pairs with the same image content or the same title count as
            matches of each other in the validation recall (their embeddings cannot be told
            apart); ``False`` counts only the exact pair.
        save_every_steps: also checkpoint every N optimiser steps (an epoch end always
            checkpoints).
        seed: seeds weights' random parts, data order and every RNG.
        device: ``auto`` | ``cpu`` | ``cuda[:i]``.
        eval_batch_size: pairs per forward pass during validation.
        num_workers: image decoding threads.
        image_cache_mb: decode every image once into a uint8 cache when it fits in this
            many MiB; otherwise decode per batch, ``num_workers`` threads ahead.
        log_every_steps: step metrics (loss, lr) sent to the hooks every N steps.
        progress: tqdm progress bars (shown on terminals only).
        torch_threads: intra-op CPU threads while training (``torch.set_num_threads``);
            ``None`` keeps PyTorch's default.  A tiny model trains faster on 1 thread,
            and a CPU shared with other jobs does badly with oversubscribed threads.
    """

    epochs: int = 2
    batch_size: int = 32
    grad_accum_steps: int = 1
    lr: float = 6e-5
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int | None = None
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    precision: str = "auto"
    freeze_text: bool = False
    freeze_vision: bool = False
    train_last_n_blocks: int | None = None
    max_logit_scale: float = 100.0
    patience: int | None = None
    min_delta: float = 0.0
    recall_ks: tuple[int, ...] = (1, 5, 10)
    match_duplicates: bool = True
    save_every_steps: int | None = None
    seed: int = 42
    device: str = "auto"
    eval_batch_size: int = 256
    num_workers: int = 2
    image_cache_mb: int = 4096
    log_every_steps: int = 1
    progress: bool = True
    torch_threads: int | None = None

    #: Fields that change how fast or how visibly training runs, not its result.
    RUNTIME_FIELDS = frozenset(
        {
            "device",
            "eval_batch_size",
            "num_workers",
            "image_cache_mb",
            "log_every_steps",
            "progress",
            "save_every_steps",
            "torch_threads",
        }
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "recall_ks", tuple(sorted({int(k) for k in self.recall_ks})))
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            problems.append(
                f"batch_size must be >= 2, got {self.batch_size}: the contrastive loss takes "
                "its negatives from the other pairs of the batch, so a batch of one has none"
            )
        if self.grad_accum_steps < 1:
            problems.append(f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        if self.train_last_n_blocks is not None and self.train_last_n_blocks < 0:
            problems.append(f"train_last_n_blocks must be >= 0, got {self.train_last_n_blocks}")
        if self.freeze_text and self.freeze_vision:
            problems.append("freeze_text and freeze_vision together leave nothing to train")
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience must be >= 1 or null, got {self.patience}")
        if not self.recall_ks or self.recall_ks[0] < 1:
            problems.append(f"recall_ks must be positive integers, got {self.recall_ks}")
        if self.torch_threads is not None and self.torch_threads < 1:
            problems.append(f"torch_threads must be >= 1 or null, got {self.torch_threads}")
        if self.save_every_steps is not None and self.save_every_steps < 1:
            problems.append(f"save_every_steps must be >= 1 or null, got {self.save_every_steps}")
        if not self.max_logit_scale > 0:
            problems.append(f"max_logit_scale must be > 0, got {self.max_logit_scale}")
        if problems:
            raise ValueError("invalid clip_finetune.train parameters: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> TrainConfig:
        """Build from a parameters mapping; unknown keys are an error (typos are caught).

        Raises:
            ValueError: unknown keys (listing the known ones) or invalid values.
        """
        params = dict(params or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(
                f"unknown clip_finetune.train parameter(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def semantic_dict(self) -> dict[str, Any]:
        """The fields that change the trained weights (used in the resume fingerprint)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_FIELDS}


# ---------------------------------------------------------------------- loss
def contrastive_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss.

    ``logits = exp(logit_scale) * normalise(image_emb) @ normalise(text_emb).T`` (``[B, B]``,
    computed in float32); the loss is the mean of the image→text and text→image
    cross-entropies whose target for row i is pair i (Radford et al. 2021, fig. 3).

    Duplicates need no special target: two pairs with the same image (or the same title)
    have identical logit rows (columns), so each row's loss summed over the duplicates,
    and its gradient, equal those of a target spread evenly over them.  They only matter
    for the recall, where :func:`retrieval_metrics` counts them as matches.

    Args:
        image_emb: ``[B, D]`` image features (any norm).
        text_emb: ``[B, D]`` text features of the same pairs, in the same order.
        logit_scale: scalar tensor, log of the inverse temperature (``CLIPModel.logit_scale``).

    Returns:
        Scalar loss tensor (>= 0; ``log B`` for uninformative features).

    Raises:
        ValueError: mismatched shapes, or fewer than 2 pairs (a batch of one has no negative
            and a loss of exactly 0).
    """
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb and text_emb must both be [B, D], got {list(image_emb.shape)} and "
            f"{list(text_emb.shape)}"
        )
    b = image_emb.shape[0]
    if b < 2:
        raise ValueError(
            f"the contrastive loss needs at least 2 pairs, got {b}: a batch of one has no "
            "negative to contrast with (its loss is always 0)"
        )
    img = F.normalize(image_emb.float(), dim=-1)
    txt = F.normalize(text_emb.float(), dim=-1)
    logits = logit_scale.float().exp() * img @ txt.t()
    labels = torch.arange(b, device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


# ---------------------------------------------------------------------- retrieval metrics
def _as_unit_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    return F.normalize(t, dim=-1)


def retrieval_ranks(
    queries: np.ndarray | torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
    positives: Callable[[slice], torch.Tensor] | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """1-based rank of the best-scoring correct candidate for every query (cosine similarity).

    Ties are counted against the query: ``rank = 1 + #{wrong candidates scoring >= the
    best correct one}``, so a model that scores everything equally gets the worst ranks,
    never perfect ones.

    Args:
        queries: ``[N, D]``; query i's correct candidate is candidate i.
        candidates: ``[N, D]``.
        positives: ``rows -> bool [len(rows), N]`` of further correct candidates (its
            diagonal entries are implied); ``None`` = only candidate i.
        chunk: queries scored at a time (memory ``chunk x N`` floats).

    Returns:
        ``int64 [N]`` ranks in ``1..N``.
    """
    q, c = _as_unit_tensor(queries), _as_unit_tensor(candidates)
    n = q.shape[0]
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        s = q[rows] @ c.t()
        pos = torch.zeros_like(s, dtype=torch.bool)
        if positives is not None:
            pos |= positives(rows)
        idx = torch.arange(rows.start, rows.stop)
        pos[idx - rows.start, idx] = True
        best = s.masked_fill(~pos, float("-inf")).max(dim=1).values
        ranks[rows] = (1 + ((s >= best[:, None]) & ~pos).sum(dim=1)).numpy()
    return ranks


def chance_recall(n_positives: np.ndarray, n: int, k: int) -> float:
    """Expected recall@k of a random ranking: mean over queries of
    ``1 - C(n - p, k) / C(n, k)`` (at least one of ``p`` positives among ``k`` of ``n``)."""
    p = np.asarray(n_positives, dtype=np.float64)[:, None]
    t = np.arange(min(k, n), dtype=np.float64)[None, :]
    miss = np.prod(np.clip((n - p - t) / (n - t), 0.0, None), axis=1)
    return float(np.mean(1.0 - miss))


def retrieval_metrics(
    text_emb: np.ndarray | torch.Tensor,
    image_emb: np.ndarray | torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    text_keys: np.ndarray | None = None,
    image_keys: np.ndarray | None = None,
) -> dict[str, float]:
    """Text→image and image→text retrieval among the N pairs of a split.

    Pair i's title should retrieve pair i's image (``t2i``) and vice versa (``i2t``).  With
    keys, pair j also counts as correct for query i when ``image_keys[j] == image_keys[i]``
    or ``text_keys[j] == text_keys[i]`` (a duplicate image, an identical title).

    Args:
        text_emb, image_emb: ``[N, D]`` embeddings of the same N pairs (any norm).
        ks: the k of recall@k.
        text_keys, image_keys: optional ``[N]`` hashable keys (e.g. factorised codes).

    Returns:
        ``{"n": N, "t2i_recall_<k>", "t2i_median_rank", "t2i_mean_rank", the same for
        "i2t", "mean_recall" (mean of every recall@k of both directions),
        "chance_t2i_recall_<k>", "chance_i2t_recall_<k>"}``.

    Raises:
        ValueError: shapes differ, or N < max(ks) (recall@k is 1 by construction then).
    """
    text = _as_unit_tensor(text_emb)
    image = _as_unit_tensor(image_emb)
    if text.ndim != 2 or text.shape != image.shape:
        raise ValueError(
            f"text_emb and image_emb must both be [N, D], got {list(text.shape)} and "
            f"{list(image.shape)}"
        )
    n = text.shape[0]
    ks = sorted({int(k) for k in ks})
    if n < ks[-1]:
        raise ValueError(
            f"retrieval on {n} pairs cannot measure recall@{ks[-1]} (every query would score "
            f"1.0): the validation split needs at least {ks[-1]} pairs"
        )
    tk = torch.as_tensor(np.asarray(text_keys)) if text_keys is not None else None
    ik = torch.as_tensor(np.asarray(image_keys)) if image_keys is not None else None

    def positives(rows: slice) -> torch.Tensor:
        pos = torch.zeros((rows.stop - rows.start, n), dtype=torch.bool)
        for k in (tk, ik):
            if k is not None:
                pos |= k[rows, None] == k[None, :]
        return pos

    use_keys = tk is not None or ik is not None
    n_pos = (
        np.concatenate(
            [positives(slice(s, min(s + 1024, n))).sum(1).numpy() for s in range(0, n, 1024)]
        )
        if use_keys
        else np.ones(n)
    )
    n_pos = np.maximum(n_pos, 1)  # the pair itself
    out: dict[str, float] = {"n": float(n)}
    recalls = []
    for name, q, c in (("t2i", text, image), ("i2t", image, text)):
        ranks = retrieval_ranks(q, c, positives if use_keys else None)
        for k in ks:
            out[f"{name}_recall_{k}"] = float(np.mean(ranks <= k))
            recalls.append(out[f"{name}_recall_{k}"])
        out[f"{name}_median_rank"] = float(np.median(ranks))
        out[f"{name}_mean_rank"] = float(np.mean(ranks))
    out["mean_recall"] = float(np.mean(recalls))
    for name in ("t2i", "i2t"):  # the positive relation is symmetric: same chance both ways
        for k in ks:
            out[f"chance_{name}_recall_{k}"] = chance_recall(n_pos, n, k)
    return out


# ---------------------------------------------------------------------- optimisation
def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on weight matrices only.

    No decay on biases, on every parameter with fewer than 2 dimensions (LayerNorm
    weights, ``class_embedding``, ``logit_scale``) and on ``nn.Embedding`` / ``nn.LayerNorm``
    weights (token and position embeddings).  Frozen parameters are left out.

    Returns:
        ``[{"name": "decay", "params": [...], "weight_decay": wd},
        {"name": "no_decay", "params": [...], "weight_decay": 0.0}]`` (empty groups dropped).
    """
    no_decay_types = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if p.ndim < 2 or name.endswith("bias") or isinstance(module, no_decay_types):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": float(weight_decay)},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class WarmupCosine:
    """Learning-rate multiplier: linear warm-up, then cosine decay (``LambdaLR`` lambda).

    At optimiser step ``s`` (0-based): ``(s + 1) / warmup`` while ``s < warmup``, then
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2``,
    which is 1 at the end of the warm-up and reaches ``min_ratio`` after the last step.
    A plain object (not a closure) so ``LambdaLR.state_dict`` saves it.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.warmup_steps = int(min(max(warmup_steps, 0), total_steps))
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _towers(model: nn.Module) -> dict[str, tuple[nn.Module, list[nn.Module]]]:
    """``{"text": (text_model, [text head]), "vision": (vision_model, [vision head])}``."""
    towers = {}
    for name, body, heads in (
        ("text", "text_model", ("text_projection",)),
        ("vision", "vision_model", ("visual_projection",)),
    ):
        if not hasattr(model, body):
            raise TypeError(
                f"{type(model).__name__} has no {body}: only CLIP-like models can be fine-tuned"
            )
        towers[name] = (
            getattr(model, body),
            [getattr(model, h) for h in heads if isinstance(getattr(model, h, None), nn.Module)],
        )
    return towers


def freeze_parameters(
    model: nn.Module,
    *,
    freeze_text: bool = False,
    freeze_vision: bool = False,
    train_last_n_blocks: int | None = None,
) -> dict[str, int]:
    """Set ``requires_grad`` for partial fine-tuning of a CLIP model, in place.

    A frozen tower freezes its transformer and its projection.  ``train_last_n_blocks=N``
    freezes, in each tower that is not frozen, the embeddings (token/patch/position), the
    vision pre-LayerNorm and all encoder blocks but the last N; final norms, projections
    and ``logit_scale`` keep training.  Everything else is trainable.

    Returns:
        ``{"trainable": n, "frozen": m}`` parameter counts (elements).

    Raises:
        ValueError: both towers frozen, or a negative N.
        TypeError: the model has no ``text_model``/``vision_model``.
    """
    if freeze_text and freeze_vision:
        raise ValueError("freezing both towers leaves nothing to train")
    if train_last_n_blocks is not None and train_last_n_blocks < 0:
        raise ValueError(f"train_last_n_blocks must be >= 0, got {train_last_n_blocks}")
    for p in model.parameters():
        p.requires_grad_(True)
    for name, (body, heads) in _towers(model).items():
        if (name == "text" and freeze_text) or (name == "vision" and freeze_vision):
            for m in (body, *heads):
                m.requires_grad_(False)
            continue
        if train_last_n_blocks is None:
            continue
        layers = body.encoder.layers
        n_frozen = max(0, len(layers) - train_last_n_blocks)
        for layer in list(layers)[:n_frozen]:
            layer.requires_grad_(False)
        body.embeddings.requires_grad_(False)
        if hasattr(body, "pre_layrnorm"):
            body.pre_layrnorm.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen}


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, world_size: int = 1
) -> list[np.ndarray]:
    """The global batches of one epoch: a seeded shuffle of ``range(n)`` cut into batches.

    The order depends only on ``(seed, epoch)``, so a resumed run replays it exactly.  A
    trailing batch too small to train on (fewer than ``max(2, world_size)`` pairs; a batch
    of one has no negative) is merged into the previous batch; with ``world_size > 1``
    every batch is trimmed to a multiple of ``world_size`` so each process gets an equal
    share (at most ``world_size - 1`` pairs sit out an epoch).

    Returns:
        Index arrays (``int64``), each of at least 2 pairs.

    Raises:
        ValueError: ``n < 2``, or ``batch_size`` not a multiple of ``world_size``.
    """
    if n < 2:
        raise ValueError(
            f"contrastive training needs at least 2 training pairs, got {n}: add products"
        )
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} must be a multiple of the number of processes {world_size}"
        )
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < max(2, world_size):
        tail = batches.pop()
        batches[-1] = np.concatenate([batches[-1], tail])
    if world_size > 1:
        batches = [b[: len(b) - len(b) % world_size] for b in batches]
    return [b.astype(np.int64) for b in batches]


# ---------------------------------------------------------------------- data
class ClipAdapter:
    """What training needs from a CLIP bundle, whatever its checkpoint layout.

    Wraps a :class:`vitrina.models.ruclip.RuClipBundle` (youtokentome BPE, ruCLIP image
    processor) or a :class:`vitrina.models.hf_clip.HfClipBundle` (``AutoProcessor``).

    Raises:
        TypeError: any other object.
    """

    def __init__(self, bundle: Any) -> None:
        from vitrina.models.hf_clip import HfClipBundle
        from vitrina.models.ruclip import RuClipBundle

        self.bundle = bundle
        self.model = bundle.model
        if isinstance(bundle, RuClipBundle):
            tok = bundle.tokenizer
            self.kind = "ruclip"
            self._encode = tok.encode
            self.pad_id = tok.pad_id
            self.max_length = tok.context_length
            self.image_processor = bundle.image_processor
            self.mean, self.std = bundle.config.mean, bundle.config.std
        elif isinstance(bundle, HfClipBundle):
            tok = bundle.processor.tokenizer
            self.kind = "hf_clip"
            self.max_length = int(self.model.config.text_config.max_position_embeddings)
            self._encode = lambda texts: tok(
                list(texts), truncation=True, max_length=self.max_length
            )["input_ids"]
            self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
            self.image_processor = bundle.processor.image_processor
            self.mean = tuple(self.image_processor.image_mean)
            self.std = tuple(self.image_processor.image_std)
        else:
            raise TypeError(
                "expected a RuClipBundle or an HfClipBundle (a CLIP checkpoint), got "
                f"{type(bundle).__name__}"
            )

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, with the model's special tokens, truncated, unpadded."""
        return [list(map(int, ids)) for ids in self._encode([str(t) for t in texts])]

    def image_uint8(self, path: str | Path) -> np.ndarray:
        """One image resized and cropped as the model expects: ``uint8 [3, R, R]``.

        Same pixels as the checkpoint's image processor before its rescale/normalise step.
        """
        from vitrina.models.embedders import load_rgb

        arr = self.image_processor(
            images=load_rgb(path), do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"][0]
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)

    def with_model(self, model: nn.Module) -> Any:
        """A copy of the bundle holding ``model`` (same tokenizer / processor / config)."""
        return dataclasses.replace(self.bundle, model=model)


@dataclass
class PairData:
    """Tokenised titles and preprocessed images of N (image, title) pairs.

    Attributes:
        token_ids: per pair, the title's ids (special tokens included, unpadded).
        image_paths: per pair, the processed image file.
        image_keys, text_keys: ``int64 [N]``: equal keys = same image content / same title.
        pad_id: padding id of the tokenizer.
        mean, std: per-channel normalisation (RGB, pixels scaled to [0, 1]).
        image_uint8: ``path -> uint8 [3, R, R]`` (decodes one image).
        pixels: ``uint8 [N, 3, R, R]`` cache, or ``None`` to decode per batch.
        pad_to: pad every title to this many tokens instead of the batch's longest.
    """

    token_ids: list[list[int]]
    image_paths: list[str]
    image_keys: np.ndarray
    text_keys: np.ndarray
    pad_id: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_uint8: Callable[[str], np.ndarray]
    pixels: torch.Tensor | None = None
    pad_to: int | None = None

    def __len__(self) -> int:
        return len(self.token_ids)

    def cache_images(self, num_workers: int = 2, progress: bool = True) -> PairData:
        """Decode every image once into :attr:`pixels` (threads), in place; returns self."""
        if self.pixels is not None or not len(self):
            return self
        with ThreadPoolExecutor(max(1, num_workers)) as pool:
            arrays = list(
                tqdm(
                    pool.map(self.image_uint8, self.image_paths),
                    total=len(self),
                    desc="clip_finetune images",
                    unit="img",
                    disable=None if progress else True,
                )
            )
        self.pixels = torch.from_numpy(np.stack(arrays))
        return self

    def subset(self, idx: np.ndarray) -> PairData:
        """The pairs at ``idx`` (shares the decoder; slices the cache)."""
        idx = np.asarray(idx, dtype=np.int64)
        return dataclasses.replace(
            self,
            token_ids=[self.token_ids[i] for i in idx],
            image_paths=[self.image_paths[i] for i in idx],
            image_keys=self.image_keys[idx],
            text_keys=self.text_keys[idx],
            pixels=None if self.pixels is None else self.pixels[torch.from_numpy(idx)],
        )

    def texts(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` ``LongTensor [b, L]``, L = longest (or ``pad_to``)."""
        rows = [self.token_ids[i] for i in idx]
        length = self.pad_to or max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for j, r in enumerate(rows):
            r = r[:length]
            ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def images(self, idx: np.ndarray) -> torch.Tensor:
        """``float32 [b, 3, R, R]`` normalised pixels (from the cache or decoded now)."""
        if self.pixels is not None:
            raw = self.pixels[torch.from_numpy(np.asarray(idx, dtype=np.int64))]
        else:
            raw = torch.from_numpy(np.stack([self.image_uint8(self.image_paths[i]) for i in idx]))
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (raw.float() * (1 / 255) - mean) / std

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """A model batch: :meth:`texts` + ``pixel_values``."""
        return {**self.texts(idx), "pixel_values": self.images(idx)}


def pair_data_from_frame(
    adapter: ClipAdapter,
    pairs: Any,
    *,
    text_column: str = "title",
    match_duplicates: bool = True,
    cache_mb: float = 4096,
    num_workers: int = 2,
    progress: bool = True,
    pad_to: int | None = None,
) -> PairData:
    """:class:`PairData` from a pairs table (``clip_finetune_pairs`` rows).

    Args:
        adapter: the model's :class:`ClipAdapter`.
        pairs: DataFrame with ``text_column``, ``processed_path`` and (for duplicate
            matching) ``image_key`` and ``text_key``.
        match_duplicates: use ``image_key``/``text_key``; ``False`` makes every pair its
            own key.
        cache_mb: cache the decoded images when ``N x 3 x R x R`` bytes fit in this.

    Raises:
        KeyError: a required column is missing.
    """
    missing = [c for c in (text_column, "processed_path") if c not in pairs.columns]
    if missing:
        raise KeyError(f"the pairs table lacks columns {missing}; has {list(pairs.columns)}")
    n = len(pairs)

    def codes(column: str) -> np.ndarray:
        if match_duplicates and column in pairs.columns:
            return np.unique(pairs[column].astype(str).to_numpy(), return_inverse=True)[1]
        return np.arange(n)

    data = PairData(
        token_ids=adapter.encode_texts(pairs[text_column].astype(str).tolist()),
        image_paths=pairs["processed_path"].astype(str).tolist(),
        image_keys=codes("image_key").astype(np.int64),
        text_keys=codes("text_key").astype(np.int64),
        pad_id=adapter.pad_id,
        mean=tuple(adapter.mean),
        std=tuple(adapter.std),
        image_uint8=adapter.image_uint8,
        pad_to=pad_to,
    )
    if n:
        side = adapter.image_uint8(data.image_paths[0]).shape[-1]
        if n * 3 * side * side <= cache_mb * 2**20:
            data.cache_images(num_workers, progress)
    return data


def _prefetch(
    data: PairData, batches: Sequence[np.ndarray], num_workers: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Model batches in order; images decoded by threads a few batches ahead when uncached."""
    if data.pixels is not None or num_workers < 1:
        for idx in batches:
            yield data.batch(idx)
        return
    with ThreadPoolExecutor(num_workers) as pool:
        pending = [pool.submit(data.batch, idx) for idx in batches[: num_workers + 1]]
        for i in range(len(batches)):
            out = pending.pop(0).result()
            nxt = i + len(pending) + 1
            if nxt < len(batches):
                pending.append(pool.submit(data.batch, batches[nxt]))
            yield out


# ---------------------------------------------------------------------- model plumbing
class ClipTrainModule(nn.Module):
    """``forward(batch) -> (image features, text features, logit_scale)`` of a CLIP model.

    A module (not bare ``get_*_features`` calls) so that ``DistributedDataParallel`` sees
    the forward pass it synchronises gradients for.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img = self.model.get_image_features(pixel_values=pixel_values)
        txt = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        img = img if isinstance(img, torch.Tensor) else img.pooler_output
        txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
        return img, txt, self.model.logit_scale


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` of equal-sized ``[b, D]`` tensors whose backward sums the gradients of
    every process's copy of the local slice (so each process can compute the loss over
    the global batch and still send the exact gradient to its own features)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def _distributed() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 (or fp16) autocast on CUDA, fp32 elsewhere; others unchanged."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def embed_pairs(
    model: nn.Module,
    data: PairData,
    batch_size: int = 256,
    precision: str = "fp32",
    num_workers: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised ``(image [N, D], text [N, D])`` float32 CPU embeddings of all pairs."""
    device = next(model.parameters()).device
    module = ClipTrainModule(model)
    was_training = model.training
    model.eval()
    batches = [
        np.arange(s, min(s + batch_size, len(data))) for s in range(0, len(data), batch_size)
    ]
    imgs, txts = [], []
    try:
        for batch in _prefetch(data, batches, num_workers):
            with _autocast(device, precision):
                img, txt, _ = module(**{k: v.to(device) for k, v in batch.items()})
            imgs.append(F.normalize(img.float(), dim=-1).cpu())
            txts.append(F.normalize(txt.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(imgs), torch.cat(txts)


def evaluate_retrieval(
    model: nn.Module,
    data: PairData,
    ks: Sequence[int] = (1, 5, 10),
    *,
    batch_size: int = 256,
    loss_batch_size: int = 32,
    precision: str = "fp32",
    num_workers: int = 2,
) -> dict[str, float]:
    """:func:`retrieval_metrics` of ``model`` on ``data`` plus ``val_loss``.

    ``val_loss`` is the mean :func:`contrastive_loss` over consecutive chunks of
    ``loss_batch_size`` pairs (in data order), comparable with the training loss.
    """
    image, text = embed_pairs(model, data, batch_size, precision, num_workers)
    metrics = retrieval_metrics(text, image, ks, data.text_keys, data.image_keys)
    # Fixed (seed 0) chunks, so the value is comparable from epoch to epoch.
    chunks = epoch_batches(len(data), loss_batch_size, 0, 0) if len(data) >= 2 else []
    scale = model.logit_scale.detach().float().cpu()
    losses = [float(contrastive_loss(image[idx], text[idx], scale)) for idx in chunks]
    metrics["val_loss"] = float(np.mean(losses)) if losses else float("nan")
    return metrics


# ---------------------------------------------------------------------- training loop
class TrainHooks(Protocol):
    """Receivers of training progress (called on the main process only)."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """After optimiser step ``step`` (1-based): ``loss``, ``lr``, ``grad_norm``, ..."""

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """After epoch ``epoch`` (1-based) with its validation metrics."""


@dataclass
class TrainResult:
    """What :func:`train_clip` returns.

    Attributes:
        model: the trained model with the best epoch's weights loaded, in eval mode.
        history: one dict per finished epoch (``epoch``, ``step``, ``train_loss``,
            ``val_loss``, recall metrics, ``lr``, ``seconds``, ``pairs_per_s``, ``is_best``).
        best_epoch: epoch (1-based) whose weights were kept.
        best_metrics: its validation metrics.
        global_step: optimiser steps done.
        stopped_early: patience ran out.
        resumed_from_step: the checkpoint step training resumed from (``None``: fresh).
    """

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int | None
    best_metrics: dict[str, float]
    global_step: int
    stopped_early: bool = False
    resumed_from_step: int | None = None


@dataclass
class _Progress:
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches of the current epoch done
    global_step: int = 0
    best_metric: float = float("-inf")
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_file: str | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_loss_sum: float = 0.0
    epoch_loss_n: int = 0
    finished: bool = False
    stopped_early: bool = False

    def result(self, model: nn.Module, resumed_from: int | None) -> TrainResult:
        """The run's :class:`TrainResult` (``model`` holding the best weights)."""
        return TrainResult(
            model,
            self.history,
            self.best_epoch,
            self.best_metrics,
            self.global_step,
            self.stopped_early,
            resumed_from,
        )


def model_fingerprint(model: nn.Module) -> str:
    """SHA-1 of every tensor of the state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def training_fingerprint(config: TrainConfig, model: nn.Module, extra: str = "") -> str:
    """What a checkpoint must match to be resumed: semantic config, start weights, data."""
    payload = json.dumps(
        {"config": config.semantic_dict(), "model": model_fingerprint(model), "data": extra},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(state["python"])


def load_training_state(state_dir: str | Path) -> dict[str, Any] | None:
    """The checkpoint in ``state_dir`` (``state.pt``), or ``None`` when there is none."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _save_torch(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _metric_line(m: Mapping[str, float], ks: Sequence[int]) -> str:
    parts = []
    for d in ("t2i", "i2t"):
        recalls = "/".join(f"{m[f'{d}_recall_{k}']:.3f}" for k in ks)
        parts.append(f"{d} R@{'/'.join(map(str, ks))} {recalls} medR {m[f'{d}_median_rank']:g}")
    return " | ".join(parts)


def train_clip(
    model: nn.Module,
    train: PairData,
    val: PairData,
    config: TrainConfig,
    *,
    state_dir: str | Path | None = None,
    resume: bool = True,
    fingerprint_extra: str = "",
    hooks: Sequence[TrainHooks] = (),
) -> TrainResult:
    """Fine-tune ``model`` (in place) with the contrastive loss; keep the best epoch.

    Every epoch: seeded shuffle (:func:`epoch_batches`), forward under autocast
    (``config.precision``), :func:`contrastive_loss` over the global batch (gathered from
    every process under DDP), gradient accumulation over ``grad_accum_steps``
    micro-batches, clipping, AdamW with :func:`parameter_groups`, :class:`WarmupCosine`,
    logit-scale clamp; then validation (:func:`evaluate_retrieval`), best-epoch tracking
    on ``mean_recall`` and early stopping after ``patience`` epochs without improvement.

    Checkpoints (``state_dir/state.pt``: model, optimiser, scheduler, gradient scaler, RNG
    states, step, epoch, position in the epoch, history; plus ``best-<step>.pt`` with the
    best weights) are written atomically after every epoch and every
    ``save_every_steps`` steps.  When ``resume`` and the checkpoint's fingerprint (semantic
    config, starting weights, ``fingerprint_extra``) matches, training continues from it
    and ends exactly as an uninterrupted run would; a finished checkpoint returns its best
    model at once.  A checkpoint that does not match is ignored (and later overwritten).

    When a ``torch.distributed`` process group is initialised (``torchrun``), the model is
    wrapped in ``DistributedDataParallel``, each process takes its share of every global
    batch and only rank 0 validates, logs and writes checkpoints.

    Args:
        model: a CLIP-like model (``get_text_features``, ``get_image_features``,
            ``logit_scale``), trained in place.
        train, val: :class:`PairData` of the two splits.
        config: hyper-parameters.
        state_dir: where checkpoints go; ``None`` keeps nothing on disk (no resume).
        resume: continue from a matching checkpoint in ``state_dir``.
        fingerprint_extra: a digest of the data, part of the checkpoint fingerprint.
        hooks: progress receivers (MLflow logging, tests).

    Returns:
        :class:`TrainResult` (the model holds the best epoch's weights).

    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf; the message names the
            step, and the last good checkpoint stays in ``state_dir``.
        ValueError: fewer than 2 training pairs or fewer validation pairs than
            ``max(recall_ks)``.
    """
    with limit_threads(config.torch_threads):
        return _train_clip(model, train, val, config, state_dir, resume, fingerprint_extra, hooks)


def _train_clip(
    model: nn.Module,
    train: PairData,
    val: PairData,
    config: TrainConfig,
    state_dir: str | Path | None,
    resume: bool,
    fingerprint_extra: str,
    hooks: Sequence[TrainHooks],
) -> TrainResult:
    rank, world = _distributed()
    main = rank == 0
    if len(val) < config.recall_ks[-1]:
        raise ValueError(
            f"the validation split has {len(val)} pairs, too few for recall@"
            f"{config.recall_ks[-1]}: raise clip_finetune.val_size, add products or lower "
            "clip_finetune.train.recall_ks"
        )
    if world > 1 and torch.cuda.is_available() and config.device in ("auto", "cuda"):
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device(resolve_device(config.device))
    precision = resolve_precision(config.precision, device)
    state_dir = Path(state_dir) if state_dir is not None else None

    set_seed(config.seed)  # transformers: Python, NumPy, torch (CPU and CUDA)
    # hashes every starting weight: only when there is a state to resume or write
    fingerprint = (
        training_fingerprint(config, model, f"{fingerprint_extra}|world={world}")
        if state_dir is not None
        else None
    )
    model.to(device)
    counts = freeze_parameters(
        model,
        freeze_text=config.freeze_text,
        freeze_vision=config.freeze_vision,
        train_last_n_blocks=config.train_last_n_blocks,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
    )
    n_batches = len(epoch_batches(len(train), config.batch_size, 0, config.seed, world))
    steps_per_epoch = math.ceil(n_batches / config.grad_accum_steps)
    total_steps = steps_per_epoch * config.epochs
    warmup = (
        config.warmup_steps
        if config.warmup_steps is not None
        else round(config.warmup_ratio * total_steps)
    )
    schedule = WarmupCosine(warmup, total_steps, config.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    progress = _Progress()
    best_weights: dict[str, torch.Tensor] | None = None
    max_scale = math.log(config.max_logit_scale)

    checkpoint = load_training_state(state_dir) if state_dir is not None and resume else None
    resumed_from = None
    if checkpoint is not None and checkpoint.get("fingerprint") != fingerprint:
        if main:
            logger.warning(
                "clip_finetune: the checkpoint in %s belongs to another configuration, "
                "model or data (fingerprint %s, now %s): training starts from scratch and "
                "will overwrite it",
                state_dir,
                checkpoint.get("fingerprint"),
                fingerprint,
            )
        checkpoint = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_state(checkpoint["rng"])
        progress = _Progress(**checkpoint["progress"])
        resumed_from = progress.global_step
        if main:
            logger.info(
                "clip_finetune: resuming from %s (epoch %d, batch %d, step %d of %d)%s",
                state_dir / STATE_FILE,
                progress.epoch + 1,
                progress.batch_in_epoch,
                progress.global_step,
                total_steps,
                " - already finished" if progress.finished else "",
            )

    def load_best() -> None:
        if best_weights is not None:
            model.load_state_dict(best_weights)
        elif progress.best_file and state_dir is not None:
            model.load_state_dict(
                torch.load(state_dir / progress.best_file, map_location="cpu", weights_only=True)
            )

    def save_checkpoint() -> None:
        if state_dir is None or not main:
            return
        _save_torch(
            {
                "format": STATE_FORMAT,
                "fingerprint": fingerprint,
                "config": config.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "progress": dataclasses.asdict(progress),
            },
            state_dir / STATE_FILE,
        )
        # Best-weight files of earlier bests are obsolete once the state points elsewhere.
        for old in state_dir.glob("best-*.pt"):
            if old.name != progress.best_file:
                old.unlink(missing_ok=True)

    if progress.finished:
        load_best()
        model.eval()
        return progress.result(model, resumed_from)

    if main:
        logger.info(
            "clip_finetune: %d train / %d validation pairs, %d epochs x %d steps (batch %d%s, "
            "%d process%s), lr %.2e, warm-up %d steps, %s on %s, %d trainable / %d frozen "
            "parameters",
            len(train),
            len(val),
            config.epochs,
            steps_per_epoch,
            config.batch_size,
            f" x {config.grad_accum_steps} accumulated" if config.grad_accum_steps > 1 else "",
            world,
            "es" if world > 1 else "",
            config.lr,
            schedule.warmup_steps,
            precision,
            device,
            counts["trainable"],
            counts["frozen"],
        )

    module: nn.Module = ClipTrainModule(model)
    if world > 1:
        module = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None
        )
    model.train()

    def run_validation() -> dict[str, float]:
        metrics = None
        if main:
            metrics = evaluate_retrieval(
                model,
                val,
                config.recall_ks,
                batch_size=config.eval_batch_size,
                loss_batch_size=config.batch_size,
                precision=precision,
                num_workers=config.num_workers,
            )
        if world > 1:
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        return metrics

    for epoch in range(progress.epoch, config.epochs):
        batches = epoch_batches(len(train), config.batch_size, epoch, config.seed, world)
        start = progress.batch_in_epoch
        if start == 0:
            progress.epoch_loss_sum, progress.epoch_loss_n = 0.0, 0
        local = [b[rank * (len(b) // world) : (rank + 1) * (len(b) // world)] for b in batches]
        bar = tqdm(
            total=len(batches),
            initial=start,
            desc=f"clip_finetune epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=None if (config.progress and main) else True,
        )
        t_epoch = time.perf_counter()
        pairs_done = 0
        group_loss, group_n = 0.0, 0
        t_step = time.perf_counter()
        stream = _prefetch(train, local[start:], config.num_workers)
        for bi, batch in zip(range(start, len(batches)), stream, strict=True):
            group_start = bi - bi % config.grad_accum_steps
            group_size = min(config.grad_accum_steps, len(batches) - group_start)
            last_micro = bi + 1 == group_start + group_size
            sync = module.no_sync() if world > 1 and not last_micro else contextlib.nullcontext()
            with sync:
                with _autocast(device, precision):
                    img, txt, scale = module(**{k: v.to(device) for k, v in batch.items()})
                img, txt = img.float(), txt.float()
                if world > 1:
                    img, txt = _GatherWithGrad.apply(img), _GatherWithGrad.apply(txt)
                loss = contrastive_loss(img, txt, scale)
                if not torch.isfinite(loss):
                    raise _non_finite("loss", loss.item(), epoch, bi, progress, state_dir)
                scaler.scale(loss / group_size).backward()
            group_loss += loss.item()
            group_n += 1
            pairs_done += len(batches[bi])
            if not last_micro:
                bar.update(1)
                continue
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(
                trainable, config.max_grad_norm if config.max_grad_norm else float("inf")
            )
            if not torch.isfinite(norm) and precision != "fp16":
                raise _non_finite("gradient norm", float(norm), epoch, bi, progress, state_dir)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_scale)
            progress.global_step += 1
            progress.batch_in_epoch = bi + 1
            step_loss = group_loss / group_n
            progress.epoch_loss_sum += step_loss
            progress.epoch_loss_n += 1
            now = time.perf_counter()
            step_pairs = sum(len(batches[j]) for j in range(group_start, bi + 1))
            step_metrics = {
                "loss": step_loss,
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": float(norm),
                "logit_scale": float(model.logit_scale.detach().exp()),
                "pairs_per_s": step_pairs / max(now - t_step, 1e-9),
            }
            t_step = now
            group_loss, group_n = 0.0, 0
            bar.update(1)
            bar.set_postfix(
                loss=f"{step_loss:.4f}",
                lr=f"{step_metrics['lr']:.2e}",
                pairs_s=f"{pairs_done / max(now - t_epoch, 1e-9):.0f}",
            )
            if main and progress.global_step % config.log_every_steps == 0:
                for h in hooks:
                    h.on_step(progress.global_step, step_metrics)
            if (
                config.save_every_steps
                and progress.global_step % config.save_every_steps == 0
                and bi + 1 < len(batches)
            ):
                save_checkpoint()
        bar.close()
        seconds = time.perf_counter() - t_epoch

        metrics = run_validation()
        improved = metrics["mean_recall"] > progress.best_metric + config.min_delta
        record = {
            "epoch": epoch + 1,
            "step": progress.global_step,
            "train_loss": progress.epoch_loss_sum / max(progress.epoch_loss_n, 1),
            **{k: v for k, v in metrics.items() if not k.startswith("chance_")},
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "pairs_per_s": pairs_done / max(seconds, 1e-9),
            "is_best": float(improved),
        }
        progress.history.append(record)
        if improved:
            progress.best_metric = metrics["mean_recall"]
            progress.best_epoch = epoch + 1
            progress.best_metrics = dict(metrics)
            progress.bad_epochs = 0
            if state_dir is not None:
                progress.best_file = f"best-{progress.global_step}.pt"
                if main:
                    _save_torch(model.state_dict(), state_dir / progress.best_file)
            else:
                best_weights = copy.deepcopy(model.state_dict())
        else:
            progress.bad_epochs += 1
        stop = config.patience is not None and progress.bad_epochs >= config.patience
        progress.epoch = epoch + 1
        progress.batch_in_epoch = 0
        progress.finished = stop or epoch + 1 == config.epochs
        progress.stopped_early = stop and epoch + 1 < config.epochs
        save_checkpoint()
        if main:
            logger.info(
                "clip_finetune epoch %d/%d: train loss %.4f, val loss %.4f | %s | mean recall "
                "%.4f%s | lr %.2e | %.0f pairs/s, %.0f s",
                epoch + 1,
                config.epochs,
                record["train_loss"],
                metrics["val_loss"],
                _metric_line(metrics, config.recall_ks),
                metrics["mean_recall"],
                " (best)"
                if improved
                else f" (best {progress.best_metric:.4f}, epoch {progress.best_epoch})",
                record["lr"],
                record["pairs_per_s"],
                seconds,
            )
            for h in hooks:
                h.on_epoch(epoch + 1, record)
        if world > 1:
            dist.barrier()
        if progress.stopped_early:
            if main:
                logger.info(
                    "clip_finetune: early stop after epoch %d, no mean-recall gain for %d "
                    "epochs; keeping epoch %d",
                    epoch + 1,
                    config.patience,
                    progress.best_epoch,
                )
            break

    load_best()
    model.eval()
    return progress.result(model, resumed_from)


def _non_finite(
    what: str, value: float, epoch: int, batch: int, progress: _Progress, state_dir: Path | None
) -> NonFiniteLossError:
    saved = _checkpoint_step(state_dir) if state_dir is not None else None
    where = (
        f"the last good checkpoint (step {saved}) is kept in {state_dir / STATE_FILE}"
        if saved is not None
        else "no checkpoint had been written yet"
    )
    return NonFiniteLossError(
        f"clip_finetune: the {what} is {value} at epoch {epoch + 1}, batch {batch + 1} "
        f"(after {progress.global_step} optimiser steps); training stopped and {where}. "
        "Lower clip_finetune.train.lr, set max_grad_norm, or use precision fp32/bf16, then "
        "rerun (changed hyper-parameters start a fresh run)"
    )


def _checkpoint_step(state_dir: Path) -> int | None:
    state = load_training_state(state_dir)
    return None if state is None else int(state["progress"]["global_step"])
