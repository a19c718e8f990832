"""Checking every exported artefact against the eager PyTorch graph it came from."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .runtime import Runner

#: Default absolute tolerance on logits / embeddings (the issue's 1e-4).
ATOL = 1e-4


class ExportMismatchError(AssertionError):
    """An artefact's outputs differ from eager PyTorch by more than the tolerance."""


def check_batch_sizes(sizes: Sequence[int], export_batch: int) -> list[int]:
    """The batch sizes to check: two or more, none equal to the export batch.

    Raises:
        ValueError: fewer than two sizes, a size < 1, or the export batch among them.
    """
    sizes = [int(s) for s in sizes]
    if len(set(sizes)) < 2 or min(sizes) < 1 or export_batch in sizes:
        raise ValueError(
            f"export.check_batch_sizes must be two or more distinct sizes >= 1 other than "
            f"the export batch ({export_batch}); got {sizes}"
        )
    return sizes


def inputs_for(pool: np.ndarray, size: int) -> np.ndarray:
    """``size`` inputs ``float32 [size, 3, S, S]`` taken in turn from ``pool``."""
    return np.ascontiguousarray(pool[np.arange(size) % len(pool)], dtype=np.float32)


def compare(
    name: str,
    runner: Runner,
    eager: torch.nn.Module,
    pool: np.ndarray,
    batch_sizes: Sequence[int],
    atol: float = ATOL,
) -> dict[str, float]:
    """Run ``runner`` and ``eager`` on the same inputs at each batch size.

    Returns:
        ``{"max_abs_diff_b<size>": value, ...}``.

    Raises:
        ExportMismatchError: a difference over ``atol`` or a shape mismatch, naming the
            artefact, the batch size and the difference.
    """
    report: dict[str, float] = {}
    for size in batch_sizes:
        x = inputs_for(pool, size)
        with torch.inference_mode():
            ref = eager(torch.from_numpy(x)).float().numpy()
        got = np.asarray(runner(x))
        if got.shape != ref.shape:
            raise ExportMismatchError(
                f"{name} at batch {size}: output shape {got.shape}, eager {ref.shape}"
            )
        diff = float(np.abs(got - ref).max())
        if not diff <= atol:
            raise ExportMismatchError(
                f"{name} at batch {size}: max |difference| {diff:.3g} from eager PyTorch "
                f"exceeds atol {atol:g}"
            )
        report[f"max_abs_diff_b{size}"] = diff
    return report
