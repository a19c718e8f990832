"""Probes: classifiers fitted on frozen embeddings, and their metrics.

A probe measures how much of an attribute an embedding carries (linear probe: Alain &
Bengio 2016; the CLIP paper's protocol, Radford et al. 2021, §3.2). ``logreg`` is an L2
logistic regression on standardised features; ``mlp`` a one-hidden-layer perceptron
(the seed system's two probes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from vitrina.splits import validation_split

#: The MLP probe's settings where ``probing.probes.mlp`` leaves them out (both backends).
MLP_DEFAULTS: dict[str, Any] = {
    "hidden_layer_sizes": (256,),
    "early_stopping": True,
    "n_iter_no_change": 20,
    "batch_size": 64,
    "max_iter": 500,
}


def build_probe(kind: str, params: dict[str, Any] | None = None, seed: int = 0) -> Pipeline:
    """A scikit-learn pipeline ``StandardScaler → classifier``.

    Args:
        kind: ``logreg`` (``LogisticRegression``, lbfgs; params ``C``, ``max_iter``) or
            ``mlp`` (``MLPClassifier``; params ``hidden_layer_sizes``, ``alpha``,
            ``max_iter``, ``early_stopping``, ``learning_rate_init``).
        params: keyword arguments for the classifier.
        seed: ``random_state``.

    Raises:
        ValueError: unknown ``kind``.
    """
    params = {k: v for k, v in (params or {}).items() if k not in (*SWEEP_KEYS, "dtype")}
    if kind == "logreg":
        clf = LogisticRegression(random_state=seed, **{"max_iter": 2000, **params})
    elif kind == "mlp":
        if "hidden_layer_sizes" in params:
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        clf = MLPClassifier(random_state=seed, **{**MLP_DEFAULTS, **params})
    else:
        raise ValueError(f"Unknown probe {kind!r}; expected 'logreg' or 'mlp'")
    return make_pipeline(StandardScaler(), clf)


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray
) -> dict[str, float]:
    """Accuracy and macro-F1; ROC-AUC and PR-AUC (average precision) for two classes.

    Args:
        y_true: ``[N]`` labels (values of ``classes``).
        proba: ``[N, C]`` class probabilities, columns in ``classes`` order.
        classes: ``[C]`` class labels; for binary tasks ``classes[1]`` is the positive one.

    Returns:
        ``{"accuracy", "macro_f1"[, "roc_auc", "pr_auc"]}``; AUCs are NaN when the test
        split holds one class only.
    """
    y_pred = classes[np.argmax(proba, axis=1)]
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, average="macro", labels=classes, zero_division=0)
        ),
    }
    if len(classes) == 2:
        positive = (np.asarray(y_true) == classes[1]).astype(int)
        if 0 < positive.sum() < len(positive):
            out["roc_auc"] = float(roc_auc_score(positive, proba[:, 1]))
            out["pr_auc"] = float(average_precision_score(positive, proba[:, 1]))
        else:
            out["roc_auc"] = out["pr_auc"] = float("nan")
    return out


#: Probe parameters that configure the C sweep rather than the classifier.
SWEEP_KEYS = ("sweep_steps", "sweep_range", "validation_share")


def probe_dtype(params: dict[str, Any] | None) -> np.dtype:
    """The float type a probe is fitted in: ``params["dtype"]`` (``float32`` or ``float64``;
    default ``float32``, the embeddings' own).

    scikit-learn fits ``StandardScaler`` and ``MLPClassifier`` in the dtype of their input,
    so the scikit-learn backend casts the features to it before the pipeline, and the
    torch backend standardises and trains in it too.

    Raises:
        ValueError: another value.
    """
    name = str((params or {}).get("dtype", "float32"))
    if name not in ("float32", "float64"):
        raise ValueError(f"probe dtype must be 'float32' or 'float64', got {name!r}")
    return np.dtype(name)


def sweep_logreg_c(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    steps: int = 4,
    log10_range: tuple[float, float] = (-3.0, 3.0),
    validation_share: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
    tol: float = 1e-4,
    dtype: str | np.dtype = "float32",
) -> tuple[float, list[tuple[float, float]]]:
    """Choose the inverse L2 strength ``C`` of the logistic-regression probe on validation.

    The CLIP paper's linear-probe protocol (Radford et al. 2021, appendix A.3): a
    log-spaced sweep of the regularisation strength on a validation split, then a
    refinement around the best value. Here: ``steps`` values of ``C`` log-spaced over
    ``10**log10_range``, then ``steps`` more between the best value's neighbours, each fit
    warm-started from the previous one (increasing ``C``) on standardised features; the
    validation part is carved from ``x`` stratified by ``y`` and grouped by ``groups``.

    Args:
        x: ``float32 [N, D]`` training features; ``y``: ``[N]`` labels; ``groups``: ``[N]``.
        steps: values per stage (2 stages).
        max_iter, tol: ``LogisticRegression``'s, for every fit of the sweep.
        dtype: the float type the features are cast to before the sweep
            (:func:`probe_dtype`; the probing step's logreg uses ``float64``).

    Returns:
        The best ``C`` by validation macro-F1 and the ``(C, macro_f1)`` pairs tried.
    """
    val = validation_split(y, groups, validation_share, seed)
    x = x.astype(np.dtype(dtype), copy=False)
    scaler = StandardScaler().fit(x[~val])
    xt, xv = scaler.transform(x[~val]), scaler.transform(x[val])

    def evaluate(grid: np.ndarray) -> list[tuple[float, float]]:
        clf = LogisticRegression(max_iter=max_iter, tol=tol, warm_start=True, random_state=seed)
        out = []
        for c in np.sort(grid):
            clf.set_params(C=float(c)).fit(xt, y[~val])
            out.append(
                (
                    float(c),
                    float(f1_score(y[val], clf.predict(xv), average="macro", zero_division=0)),
                )
            )
        return out

    coarse = coarse_grid(steps, log10_range)
    tried = evaluate(coarse)
    tried += evaluate(fine_grid(coarse, [f for _, f in tried], steps))
    return best_sweep_c(tried), sorted(tried)


def coarse_grid(steps: int = 4, log10_range: Any = None) -> np.ndarray:
    """The sweep's first stage: ``max(2, steps)`` values of ``C`` log-spaced over
    ``10**log10_range`` (default ``(-3, 3)``), increasing."""
    lo, hi = (-3.0, 3.0) if log10_range is None else log10_range
    return np.logspace(float(lo), float(hi), num=max(2, steps))


def fine_grid(coarse: np.ndarray, scores: list[float], steps: int = 4) -> np.ndarray:
    """The sweep's second stage: ``steps`` values log-spaced strictly between the
    neighbours of the best coarse value (by ``scores``, first best), minus coarse ones."""
    best = int(np.argmax(scores))
    lo = np.log10(coarse[max(best - 1, 0)])
    hi = np.log10(coarse[min(best + 1, len(coarse) - 1)])
    return np.setdiff1d(np.logspace(lo, hi, num=steps + 2)[1:-1], coarse)


def best_sweep_c(tried: list[tuple[float, float]]) -> float:
    """The ``C`` of the best validation macro-F1; ties go to the ``C`` nearest 1."""
    return max(tried, key=lambda cf: (cf[1], -abs(np.log10(cf[0]))))[0]


def fit_probe(
    kind: str,
    params: dict[str, Any] | None,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    seed: int = 0,
) -> tuple[Pipeline, dict[str, Any]]:
    """Fit a probe on a training split; ``logreg`` with ``C: sweep`` chooses ``C`` first.

    Args:
        kind, params: see :func:`build_probe`; for ``logreg``, ``C: sweep`` (the default)
            runs :func:`sweep_logreg_c` with ``sweep_steps`` (default 4),
            ``sweep_range`` (log10 bounds, default [-3, 3]) and ``validation_share``.
        x, y, groups: training features ``[N, D]``, labels ``[N]``, groups ``[N]``.

    Returns:
        The fitted pipeline and ``{"C": chosen C}`` for a swept logreg (else ``{}``).
    """
    params = dict(params or {})
    info: dict[str, Any] = {}
    if kind == "logreg" and str(params.get("C", "sweep")) == "sweep":
        best_c, _ = sweep_logreg_c(
            x,
            y,
            groups,
            steps=int(params.get("sweep_steps", 4)),
            log10_range=tuple(params.get("sweep_range", (-3.0, 3.0))),
            validation_share=float(params.get("validation_share", 0.2)),
            seed=seed,
            tol=float(params.get("tol", 1e-4)),
            dtype=probe_dtype(params),
        )
        params["C"] = info["C"] = best_c
    x = x.astype(probe_dtype(params), copy=False)
    return build_probe(kind, params, seed=seed).fit(x, y), info


@dataclass
class ProbeTask:
    """One task's rows of the shared feature matrices.

    Attributes:
        name: task name.
        rows: ``int64 [n]`` row indices into every modality's matrix.
        y: ``[n]`` labels (str); ``groups``: ``[n]`` group ids; ``train``: ``bool [n]``.
    """

    name: str
    rows: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    train: np.ndarray


@dataclass
class Cell:
    """One fitted probe: metrics on the test split, extra facts (``C``, ``epochs``) and
    the seconds it took (for an MLP: from its batch's start until it stopped)."""

    task: str
    modality: str
    probe: str
    metrics: dict[str, float]
    info: dict[str, Any]
    seconds: float


def score_cell(
    task: ProbeTask,
    modality: str,
    probe: str,
    proba: np.ndarray,
    classes: np.ndarray,
    info: dict[str, Any],
    seconds: float,
) -> Cell:
    """A :class:`Cell` from a probe's test-split probabilities ``[n_test, K]``."""
    metrics = classification_metrics(task.y[~task.train], proba, classes)
    return Cell(task.name, modality, probe, metrics, info, seconds)


def probe_matrix_sklearn(
    features: dict[str, np.ndarray],
    tasks: list[ProbeTask],
    probes: dict[str, dict[str, Any]],
    *,
    seed: int = 0,
    on_cell: Callable[[Cell], None] | None = None,
) -> list[Cell]:
    """The reference backend: one :func:`fit_probe` per task × modality × probe (CPU).

    Args:
        features: per modality, ``float32 [N, D]`` rows shared by every task.
        tasks, probes, on_cell: as :func:`vitrina.models.torch_probes.probe_matrix`.
    """
    cells = []
    for task in tasks:
        y, groups, train = task.y, task.groups, task.train
        for modality, matrix in features.items():
            x = matrix[task.rows]
            for probe, params in probes.items():
                start = time.perf_counter()
                model, info = fit_probe(probe, params, x[train], y[train], groups[train], seed)
                proba = model.predict_proba(x[~train].astype(probe_dtype(params), copy=False))
                cells.append(
                    score_cell(
                        task,
                        modality,
                        probe,
                        proba,
                        model.classes_,
                        info,
                        time.perf_counter() - start,
                    )
                )
                if on_cell:
                    on_cell(cells[-1])
    return cells
