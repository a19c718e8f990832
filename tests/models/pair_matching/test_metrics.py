"""The F1-optimal threshold and the test metrics."""

from __future__ import annotations

import numpy as np
import pytest

from vitrina.models.pair_matching import binary_metrics, check_labels, select_threshold


def test_threshold_and_metrics():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    t, f1 = select_threshold(y, s)
    assert t == pytest.approx(0.35) and f1 == pytest.approx(6 / 7)
    m = binary_metrics(y, s, t)
    assert m["recall"] == 1.0 and m["precision"] == 0.75 and m["n_positive"] == 3
    assert 0 < m["pr_auc"] <= 1
    assert select_threshold(np.zeros(3), np.ones(3))[0] == 0.5


def test_one_class_is_refused():
    with pytest.raises(ValueError, match=r"only label 1 \(3 pairs\)"):
        check_labels(np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="must be 0/1"):
        check_labels(np.array([0, 2]))
