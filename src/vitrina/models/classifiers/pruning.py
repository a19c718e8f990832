"""Pruning, as seed 004's pruning callback offers it, on PyTorch's ``torch.nn.utils.prune``.

Two schedules (``pruning.schedule``):

* ``epoch`` — Lightning's ``ModelPruning`` callback prunes at the start of every training
  epoch from ``start_epoch`` on (seed 004's ``prune_on_epoch_end``, one step earlier so
  that each epoch's validation and checkpoint see the network it trained), so the epochs
  fine-tune the pruned network; checkpoints hold the pruning made permanent, and the
  kept model is the last epoch's (the most pruned; an earlier "best" could be unpruned);
* ``end`` — one-shot pruning of the best model after training (``prune_on_stage_end``).

Methods: ``l1_unstructured``, ``random_unstructured`` (global over every convolution and
linear weight), ``ln_structured``, ``random_structured`` (per layer, along ``dim``, with
``norm`` for ln). The reparametrisation is always removed at the end, so exported models
carry plain weights with zeros.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

METHODS = ("l1_unstructured", "random_unstructured", "ln_structured", "random_structured")


def prunable(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` of every convolution and linear layer of backbone and head."""
    roots = [
        m
        for m in (getattr(module, "backbone", None), getattr(module, "head", None))
        if m is not None
    ]
    return [
        (m, "weight")
        for root in (roots or [module])
        for m in root.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
    ]


def sparsity(module: nn.Module) -> float:
    """Share of exactly-zero values in the prunable weights (0..1)."""
    weights = [getattr(m, name).detach() for m, name in prunable(module)]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / max(total, 1))


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Normalised pruning settings.

    Raises:
        ValueError: an unknown method or schedule, or an amount outside (0, 1).
    """
    method = config.get("method", "l1_unstructured")
    schedule = config.get("schedule", "end")
    amount = float(config.get("amount", 0.3))
    if method not in METHODS:
        raise ValueError(f"pruning.method must be one of {METHODS}, got {method!r}")
    if schedule not in ("epoch", "end"):
        raise ValueError(f"pruning.schedule must be 'epoch' or 'end', got {schedule!r}")
    if not 0.0 < amount < 1.0:
        raise ValueError(f"pruning.amount must be a fraction in (0, 1), got {amount}")
    return {
        "method": method,
        "schedule": schedule,
        "amount": amount,
        "start_epoch": int(config.get("start_epoch", 1)),
        "dim": int(config.get("dim", 0)),
        "norm": int(config.get("norm", 2)),
    }


def pruning_callback(config: dict[str, Any], module: nn.Module) -> Any:
    """Lightning's ``ModelPruning`` for the ``epoch`` schedule, pruning at each epoch's
    start (pruning made permanent in checkpoints and at the end of training)."""
    from lightning.pytorch.callbacks import ModelPruning

    class EpochStartPruning(ModelPruning):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._run_pruning(trainer.current_epoch)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            return None

    start = config["start_epoch"]
    structured = config["method"].endswith("_structured")
    return EpochStartPruning(
        pruning_fn=config["method"],
        parameters_to_prune=prunable(module),
        use_global_unstructured=not structured,
        amount=config["amount"],
        apply_pruning=lambda epoch: epoch >= start,
        make_pruning_permanent=True,
        use_lottery_ticket_hypothesis=False,
        pruning_dim=config["dim"] if structured else None,
        pruning_norm=config["norm"] if config["method"] == "ln_structured" else None,
        verbose=0,
    )


def prune_once(module: nn.Module, config: dict[str, Any]) -> float:
    """Prune ``module`` in place (``end`` schedule) and make it permanent.

    Returns:
        The sparsity reached (see :func:`sparsity`).
    """
    params = prunable(module)
    method, amount = config["method"], config["amount"]
    with torch.no_grad():
        if method == "l1_unstructured":
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        elif method == "random_unstructured":
            prune.global_unstructured(
                params, pruning_method=prune.RandomUnstructured, amount=amount
            )
        else:
            for m, name in params:
                if getattr(m, name).dim() < 2:
                    continue
                if method == "ln_structured":
                    prune.ln_structured(m, name, amount=amount, n=config["norm"], dim=config["dim"])
                else:
                    prune.random_structured(m, name, amount=amount, dim=config["dim"])
        for m, name in params:
            if prune.is_pruned(m) and hasattr(m, f"{name}_orig"):
                prune.remove(m, name)
    return sparsity(module)
