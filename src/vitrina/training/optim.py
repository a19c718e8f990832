"""Optimisation shared by every trainer: AdamW parameter groups and the LR schedule."""

from __future__ import annotations

from typing import Any

from torch import nn


def parameter_groups(
    model: nn.Module, weight_decay: float, *, lr_scales: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on weight matrices only.

    No decay on biases, on every parameter with fewer than 2 dimensions (norm weights,
    ``class_embedding``, ``logit_scale``) and on ``nn.Embedding`` / norm-layer weights
    (the usual BERT/CLIP recipe). Frozen parameters are left out.

    Args:
        model: the module whose trainable parameters are grouped.
        weight_decay: decoupled weight decay of the decay group.
        lr_scales: optional ``{submodule name prefix: learning-rate multiplier}``, e.g.
            ``{"backbone.": 0.1}`` for a pretrained backbone under a fresh head; each group
            then carries ``lr_scale`` (read by the trainer's optimiser set-up).

    Returns:
        Groups ``{"name", "params", "weight_decay", "lr_scale"}`` (empty groups dropped),
        named ``decay-x<scale>`` / ``no_decay-x<scale>`` (characters MLflow accepts in the
        ``lr-AdamW/<name>`` metric that ``LearningRateMonitor`` logs).
    """
    no_decay_types = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
    scales = dict(lr_scales or {})
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            full = f"{module_name}.{name}" if module_name else name
            scale = next((s for prefix, s in scales.items() if full.startswith(prefix)), 1.0)
            decay = not (p.ndim < 2 or name.endswith("bias") or isinstance(module, no_decay_types))
            groups.setdefault((decay, float(scale)), []).append(p)
    return [
        {
            "name": f"{'decay' if decay else 'no_decay'}-x{scale:g}",  # MLflow-safe
            "params": params,
            "weight_decay": float(weight_decay) if decay else 0.0,
            "lr_scale": scale,
        }
        for (decay, scale), params in sorted(
            groups.items(), key=lambda kv: (not kv[0][0], kv[0][1])
        )
    ]


def adamw_with_cosine(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    total_steps: int,
    warmup_ratio: float = 0.0,
    lr_scales: dict[str, float] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> dict[str, Any]:
    """``configure_optimizers`` output: AdamW over :func:`parameter_groups`, stepped per
    batch by transformers' ``get_cosine_schedule_with_warmup`` (linear warm-up over
    ``warmup_ratio`` of ``total_steps``, then cosine decay to 0).

    ``betas`` / ``eps`` are AdamW's (torch's defaults; CLIP uses (0.9, 0.98) and 1e-6).

    Raises:
        ValueError: ``total_steps`` < 1 or ``warmup_ratio`` outside [0, 1).
    """
    import torch
    from transformers import get_cosine_schedule_with_warmup

    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    groups = parameter_groups(model, weight_decay, lr_scales=lr_scales)
    for group in groups:
        group["lr"] = learning_rate * group.pop("lr_scale")
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), eps=eps)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(round(warmup_ratio * total_steps)), total_steps
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
