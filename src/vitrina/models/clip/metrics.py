"""Retrieval metrics of a CLIP model on the pairs of a split.

* :func:`retrieval_ranks` — 1-based rank of the best correct candidate per query (ties
  count against the query);
* :func:`retrieval_metrics` — text→image (``t2i``) and image→text (``i2t``) recall@k,
  median and mean rank, and ``mean_recall`` (the mean of every recall@k of both
  directions: the metric early stopping and the best checkpoint follow);
* :func:`chance_recall` — the recall@k of a random ranking, duplicates counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


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


__all__ = ["chance_recall", "retrieval_metrics", "retrieval_ranks"]
