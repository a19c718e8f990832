"""CLIP's contrastive loss: symmetric InfoNCE, duplicate-aware, over every rank's batch.

* :func:`contrastive_loss` — Radford et al. 2021 (fig. 3): the mean of the image→text and
  text→image cross-entropies of ``exp(logit_scale) * cos`` logits. With keys, a pair that
  shares the image content or the title with another counts both as correct: the target of
  a row is spread evenly over its matches (soft targets). For exact duplicates (identical
  features: the same image bytes, the same lower-cased title) this gives the same loss and
  gradients as the hard target, since their logit rows are identical (tested); the keys
  change the loss where duplicates' features differ (dropout, augmentation).
* :func:`gather_with_grad` — every rank's features for a loss over the global batch. Own
  code because the exact gradient needs the all-reduce of the backward pass written out:
  each rank computes the same global loss, the gradient of its own slice is the sum of
  every rank's copy, and DistributedDataParallel's mean over ranks then gives exactly the
  single-process gradient (the DDP test checks this).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F


def match_targets(
    image_keys: torch.Tensor | None, text_keys: torch.Tensor | None, n: int, device: Any = None
) -> torch.Tensor:
    """``float32 [n, n]`` row-stochastic targets: row i spread over the pairs j with
    ``image_keys[j] == image_keys[i]`` or ``text_keys[j] == text_keys[i]`` (always i)."""
    match = torch.eye(n, dtype=torch.bool, device=device)
    for keys in (image_keys, text_keys):
        if keys is not None:
            keys = keys.to(device)
            match |= keys[:, None] == keys[None, :]
    target = match.float()
    return target / target.sum(1, keepdim=True)


def contrastive_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    image_keys: torch.Tensor | None = None,
    text_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss, computed in float32.

    ``logits = exp(logit_scale) * normalise(image_emb) @ normalise(text_emb).T`` (``[B, B]``);
    the loss is the mean of both directions' cross-entropies against :func:`match_targets`
    (the identity without keys: pair i's target is pair i).

    Args:
        image_emb: ``[B, D]`` image features (any norm).
        text_emb: ``[B, D]`` text features of the same pairs, in the same order.
        logit_scale: scalar tensor, log of the inverse temperature (``CLIPModel.logit_scale``).
        image_keys, text_keys: optional ``int64 [B]``; equal keys = same image content /
            same title (duplicates count as matches of each other).

    Returns:
        Scalar loss tensor (``log B`` for uninformative features without duplicates).

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
    if image_keys is None and text_keys is None:
        labels = torch.arange(b, device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    target = match_targets(image_keys, text_keys, b, logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target.t())) / 2


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` of equal-sized ``[b, D]`` tensors whose backward sums the gradients of
    every rank's copy of the local slice."""

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


def distributed() -> bool:
    """Whether a ``torch.distributed`` process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``[b, D]`` concatenated in rank order (``[W * b, D]``), with gradients
    flowing back to this rank's slice; ``x`` itself outside a process group."""
    return _GatherWithGrad.apply(x) if distributed() else x


def gather_keys(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``[b]`` keys concatenated in rank order (no gradient)."""
    if not distributed():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


__all__ = ["contrastive_loss", "distributed", "gather_keys", "gather_with_grad", "match_targets"]
