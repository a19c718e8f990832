"""Grouped, stratified splits into train / validation / test at the fractions asked for.

``scikit-learn``'s ``StratifiedGroupKFold`` gives folds of ``1/k`` only and handles one
label per row; classification needs three parts at arbitrary fractions and multi-hot
labels too. :func:`stratified_group_split` is iterative stratification (Sechidis,
Tsoumakas and Vlahavas, "On the Stratification of Multi-Label Data", ECML PKDD 2011)
applied to whole groups: groups are taken largest first (ties in a seeded random order)
and each goes to the part whose label counts fall furthest short of their targets, so no
group ever straddles two parts.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def stratified_group_split(
    labels: np.ndarray,
    groups: pd.Series | np.ndarray,
    fractions: Mapping[str, float],
    seed: int = 42,
) -> np.ndarray:
    """Assign every row to a part, keeping groups whole and labels balanced.

    Args:
        labels: ``[N]`` class labels, or ``[N, L]`` multi-hot (0/1) rows.
        groups: ``[N]`` group ids (rows of one group always land in the same part).
        fractions: ``{part name: fraction}``, fractions > 0 summing to 1.
        seed: order of equally sized groups.

    Returns:
        ``object [N]`` array of part names.

    Raises:
        ValueError: fractions that are not positive or do not sum to 1, or length mismatch.
    """
    names = list(fractions)
    shares = np.asarray([float(fractions[n]) for n in names])
    if (shares <= 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"split fractions must be > 0 and sum to 1, got {dict(fractions)}")
    labels = np.asarray(labels)
    if labels.ndim == 1:
        codes, uniques = pd.factorize(pd.Series(labels).astype(str))
        onehot = np.zeros((len(labels), len(uniques)), dtype=np.float64)
        onehot[np.arange(len(labels)), codes] = 1.0
    else:
        onehot = labels.astype(np.float64)
    groups = np.asarray(groups).astype(str)
    if len(groups) != len(onehot):
        raise ValueError(f"{len(onehot)} label rows but {len(groups)} group ids")
    group_codes, group_names = pd.factorize(groups)
    n_groups = len(group_names)
    hist = np.zeros((n_groups, onehot.shape[1]))
    np.add.at(hist, group_codes, onehot)
    size = np.bincount(group_codes, minlength=n_groups)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.permutation(n_groups), -size))
    target = shares[:, None] * hist.sum(0)[None, :]  # [parts, labels]
    target_rows = shares * len(groups)
    have = np.zeros_like(target)
    have_rows = np.zeros(len(names))
    assigned = np.empty(n_groups, dtype=np.int64)
    for g in order:
        deficit = ((target - have) * (hist[g] > 0)).sum(1)
        # Label deficits first; the row deficit breaks ties (and places unlabelled groups).
        score = deficit + 1e-6 * (target_rows - have_rows)
        part = int(np.argmax(score))
        assigned[g] = part
        have[part] += hist[g]
        have_rows[part] += size[g]
    return np.asarray(names, dtype=object)[assigned[group_codes]]
