"""The torch backend of the probing step: a model's task × modality × probe matrix at once.

Same protocol and results as the scikit-learn backend (:mod:`vitrina.models.probes`),
fitted on ``embeddings.device``:

- each modality's feature matrix goes to the device once and every task takes its rows
  from it; each fit standardises with the statistics of its own training rows, as the
  scikit-learn pipeline's ``StandardScaler`` does (the test rows never shape it);
- ``logreg`` with ``C: sweep``: the same validation part
  (:func:`~vitrina.splits.validation_split`) and the same grid
  (:func:`~vitrina.models.probes.coarse_grid`, :func:`~vitrina.models.probes.fine_grid`,
  :func:`~vitrina.models.probes.best_sweep_c`); the coarse values are fitted as one batch
  of heads (:mod:`vitrina.models.torch_logreg`), the refined ones as a second batch
  warm-started from their nearest coarse head, and the chosen ``C`` is refitted on the
  whole training split, warm-started from its sweep head;
- ``mlp``: every task and modality of the model trains at once
  (:mod:`vitrina.models.torch_mlp`), each exactly as ``MLPClassifier`` trains it: the
  same initial weights, early-stopping validation slice (``validation_fraction``, 0.1)
  and minibatches, drawn from the same ``RandomState(seed)``.

Why here and not a library: see :mod:`vitrina.models.torch_logreg` (no batched-C
logistic regression with scikit-learn's objective runs on torch) and
:mod:`vitrina.models.torch_mlp` (no library trains independent perceptrons as a batch).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from vitrina.models.probes import (
    MLP_DEFAULTS,
    Cell,
    ProbeTask,
    best_sweep_c,
    coarse_grid,
    fine_grid,
    probe_dtype,
    score_cell,
)
from vitrina.models.torch_logreg import LogisticHeads, lbfgs
from vitrina.models.torch_mlp import MlpJob, train_mlps
from vitrina.splits import validation_split

#: Probe parameters the torch backend reads (others raise: use ``backend: sklearn``).
LOGREG_KEYS = {"C", "sweep_steps", "sweep_range", "validation_share", "max_iter", "tol", "dtype"}
MLP_KEYS = {
    "hidden_layer_sizes",
    "alpha",
    "batch_size",
    "learning_rate_init",
    "max_iter",
    "early_stopping",
    "n_iter_no_change",
    "tol",
    "beta_1",
    "beta_2",
    "epsilon",
    "validation_fraction",
    "dtype",
}


def check_params(probe: str, params: dict[str, Any]) -> None:
    """Raise ``ValueError`` for a probe or a parameter the torch backend does not fit."""
    allowed = {"logreg": LOGREG_KEYS, "mlp": MLP_KEYS}.get(probe)
    if allowed is None:
        raise ValueError(f"probing.backend torch: unknown probe {probe!r}; expected logreg or mlp")
    extra = sorted(set(params) - allowed)
    if extra:
        raise ValueError(
            f"probing.backend torch: probes.{probe} has parameters {extra} it does not support "
            f"(supported: {sorted(allowed)}); use probing.backend: sklearn for them"
        )


def _encode(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes, codes = np.unique(y, return_inverse=True)
    return classes, codes.astype(np.int64)


@dataclass
class Features:
    """One modality's matrix: ``array`` (``float32 [N, D]``, host) and ``x`` (on device)."""

    array: np.ndarray
    x: torch.Tensor

    @classmethod
    def of(cls, matrix: np.ndarray, device: str) -> Features:
        array = np.ascontiguousarray(matrix, dtype=np.float32)
        return cls(array, torch.as_tensor(array, device=device))

    def scaled(
        self, fit_rows: np.ndarray, *others: np.ndarray, dtype: str | np.dtype = "float32"
    ) -> list[torch.Tensor]:
        """Rows ``fit_rows`` and each of ``others`` standardised with ``fit_rows``' statistics.

        The statistics are scikit-learn's own (``StandardScaler().fit`` on the rows cast to
        ``dtype``) and the rounding is that of ``StandardScaler.transform`` in ``dtype``
        (``x -= mean`` then ``x /= scale``, each rounded to ``dtype``), so both backends fit
        exactly the same numbers. Returns ``dtype`` tensors on the device.
        """
        dtype = np.dtype(dtype)
        scaler = StandardScaler().fit(self.array[fit_rows].astype(dtype))
        mean, scale = (
            torch.as_tensor(v, device=self.x.device) for v in (scaler.mean_, scaler.scale_)
        )
        out_type = torch.float64 if dtype == np.float64 else torch.float32
        out = []
        for rows in (fit_rows, *others):
            x = self.x[torch.as_tensor(rows, device=self.x.device)]
            out.append(((x.double() - mean).to(out_type).double() / scale).to(out_type))
        return out


_VALIDATION_PARTS: dict[tuple, np.ndarray] = {}


def validation_part(task: ProbeTask, share: float, seed: int) -> np.ndarray:
    """:func:`~vitrina.splits.validation_split` of the task's training rows, computed once
    per task for every modality and model (``StratifiedGroupKFold`` takes seconds for 61
    classes). Keyed by the labels' and groups' content, so an edited task is recomputed."""
    y, groups = task.y[task.train], task.groups[task.train]
    digest = hashlib.sha1(np.asarray(y, dtype=str).tobytes())
    digest.update(np.asarray(groups, dtype=str).tobytes())
    key = (digest.hexdigest(), float(share), int(seed))
    if key not in _VALIDATION_PARTS:
        if len(_VALIDATION_PARTS) >= 64:
            _VALIDATION_PARTS.clear()
        _VALIDATION_PARTS[key] = validation_split(y, groups, share, seed)
    return _VALIDATION_PARTS[key]


def _fit_heads(heads: LogisticHeads, warm: torch.Tensor | None, max_iter: int, tol: float):
    k = heads.c.shape[0]
    x0 = warm if warm is not None else heads.x.new_zeros(k, heads.n_params)
    params, n_iter = lbfgs(
        heads,
        x0,
        tol=tol,
        max_iter=max_iter,
        precondition=heads.preconditioner(),
        refresh_every=10,
    )
    return params, n_iter


def fit_logreg(
    feats: Features, task: ProbeTask, params: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The ``logreg`` probe of one task on one modality.

    Returns:
        Test-split probabilities ``[n_test, K]``, the classes ``[K]`` and
        ``{"C": chosen C}`` for a sweep (else ``{}``).
    """
    dev = feats.x.device
    train, test = task.rows[task.train], task.rows[~task.train]
    classes, codes = _encode(task.y[task.train])
    tol = float(params.get("tol", 1e-4))
    dtype = probe_dtype(params)
    info: dict[str, Any] = {}
    warm = None
    if str(params.get("C", "sweep")) == "sweep":
        share = float(params.get("validation_share", 0.2))
        val = validation_part(task, share, seed)
        xt, xv = feats.scaled(train[~val], train[val], dtype=dtype)
        yt, yv = torch.as_tensor(codes[~val], device=dev), codes[val]

        def evaluate(grid: np.ndarray, start: torch.Tensor | None) -> tuple[list, torch.Tensor]:
            heads = LogisticHeads(xt, yt, len(classes), torch.tensor(grid, dtype=torch.float64))
            fitted, _ = _fit_heads(heads, start, 1000, tol)
            z = heads.logits(fitted, xv)
            pred = ((z[..., 0] > 0).long() if heads.n_out == 1 else z.argmax(2)).cpu().numpy()
            scores = [
                float(f1_score(yv, pred[:, k], average="macro", zero_division=0))
                for k in range(len(grid))
            ]
            return list(zip(map(float, grid), scores, strict=True)), fitted

        steps = int(params.get("sweep_steps", 4))
        coarse = coarse_grid(steps, params.get("sweep_range"))
        tried, coarse_fit = evaluate(coarse, None)
        fine = fine_grid(coarse, [f for _, f in tried], steps)
        fitted = {c: coarse_fit[k] for k, c in enumerate(coarse)}
        if len(fine):
            nearest = [int(np.argmin(np.abs(np.log10(coarse) - np.log10(c)))) for c in fine]
            more, fine_fit = evaluate(fine, coarse_fit[nearest])
            tried += more
            fitted.update({c: fine_fit[k] for k, c in enumerate(fine)})
        c_value = best_sweep_c(tried)
        warm = fitted[c_value][None]
        info["C"] = c_value
    else:
        c_value = float(params["C"])
    xtr, xte = feats.scaled(train, test, dtype=dtype)
    y_train = torch.as_tensor(codes, device=dev)
    heads = LogisticHeads(xtr, y_train, len(classes), torch.tensor([c_value], dtype=torch.float64))
    fitted, _ = _fit_heads(heads, warm, int(params.get("max_iter", 2000)), tol)
    z = heads.logits(fitted, xte)[:, 0]
    if heads.n_out == 1:
        p1 = torch.sigmoid(z)
        proba = torch.cat([1 - p1, p1], dim=1)
    else:
        proba = torch.softmax(z, dim=1)
    return proba.cpu().numpy(), classes, info


def mlp_job(
    feats: Features, task: ProbeTask, dtype: str | np.dtype = "float32"
) -> tuple[MlpJob, np.ndarray]:
    """One task's ``mlp`` probe on one modality, and its classes. Scaled with the whole
    training split's statistics in ``dtype``, as scikit-learn's pipeline scales before
    ``MLPClassifier`` carves its validation slice from the scaled rows."""
    classes, codes = _encode(task.y[task.train])
    xtr, xte = feats.scaled(task.rows[task.train], task.rows[~task.train], dtype=dtype)
    return MlpJob(x_train=xtr, y_train=codes, x_test=xte, n_classes=len(classes)), classes


def mlp_settings(params: dict[str, Any]) -> dict[str, Any]:
    """:func:`~vitrina.models.torch_mlp.train_mlps` keywords from ``probes.mlp``."""
    settings = {**MLP_DEFAULTS, **params}
    settings.pop("dtype", None)
    settings["hidden_layer_sizes"] = tuple(settings["hidden_layer_sizes"])
    return settings


def probe_matrix(
    features: dict[str, np.ndarray],
    tasks: list[ProbeTask],
    probes: dict[str, dict[str, Any]],
    *,
    seed: int = 0,
    device: str = "cpu",
    workers: int = 1,
    on_cell: Callable[[Cell], None] | None = None,
) -> list[Cell]:
    """Fit every probe on every modality × task; the scored cells in the order done.

    Every modality's matrix goes to ``device`` once. The ``logreg`` cells are fitted one
    by one (each sweep as a batch of heads); the ``mlp`` cells are trained together:
    on CUDA all of them in one batch (narrower modalities and fewer classes zero-padded,
    which changes nothing), on the CPU one batch per feature width and class count
    (padding would cost arithmetic there). These units of work (the MLP batches first,
    the longest) run in ``workers`` threads, each as it would alone (1: one after the
    other): meant for the CPU with one torch thread each (``probing.torch_threads: 1``),
    where the small matrix products of one unit keep one core busy but not two. A result
    never depends on ``workers``; only the order of the cells does.

    Args:
        features: per modality, ``float32 [N, D]`` rows shared by every task.
        tasks: the tasks (rows into ``features``, labels, groups, train mask).
        probes: ``{"logreg": {...}, "mlp": {...}}`` as in ``probing.probes``.
        device: torch device (``cpu``, ``cuda``, ``cuda:1``).
        workers: units of work fitted at once (threads); 1 runs them in turn.
        on_cell: called with each cell as soon as it is done (progress, logging), always
            from the calling thread.

    Raises:
        ValueError: a probe or parameter the torch backend does not support
            (:func:`check_params`), raised before anything is fitted.
    """
    probes = {k: dict(v or {}) for k, v in probes.items()}
    for probe, params in probes.items():
        check_params(probe, params)
    units: list[Callable[[], list[Cell]]] = []  # each returns its scored cells

    def logreg_unit(feats: Features, task: ProbeTask, modality: str):
        def run() -> list[Cell]:
            start = time.perf_counter()
            proba, classes, info = fit_logreg(feats, task, probes["logreg"], seed)
            seconds = time.perf_counter() - start
            return [score_cell(task, modality, "logreg", proba, classes, info, seconds)]

        return run

    def mlp_unit(members: list):
        def run() -> list[Cell]:
            results = train_mlps([m[2] for m in members], seed=seed, **mlp_settings(probes["mlp"]))
            return [
                score_cell(task, modality, "mlp", r.proba, classes, {"epochs": r.epochs}, r.seconds)
                for (task, modality, _, classes), r in zip(members, results, strict=True)
            ]

        return run

    mlp = []  # (task, modality, job, classes)
    for modality, matrix in features.items():
        feats = Features.of(matrix, device)
        for task in tasks:
            if "logreg" in probes:
                units.append(logreg_unit(feats, task, modality))
            if "mlp" in probes:
                mlp.append((task, modality, *mlp_job(feats, task, probe_dtype(probes["mlp"]))))
    # CUDA: one batch. CPU: one batch per (feature width, class count), since padding the
    # inputs or the output layer would cost arithmetic there (a binary job padded to 61
    # outputs does twice its own work).
    shapes = [(job.x_train.shape[1], job.n_classes) for _, _, job, _ in mlp]
    on_gpu = str(device).startswith("cuda")
    batches = [
        [m for m, s in zip(mlp, shapes, strict=True) if shape in (None, s)]
        for shape in ([None] if on_gpu else list(dict.fromkeys(shapes)))
    ]
    units = [mlp_unit(b) for b in batches if b] + units  # the longest units first
    cells: list[Cell] = []
    with ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="probe") as pool:
        futures = [pool.submit(unit) for unit in units]
        try:
            for future in as_completed(futures):
                for cell in future.result():
                    cells.append(cell)
                    if on_cell:
                        on_cell(cell)
        except BaseException:  # a failed unit (or Ctrl-C): the queued ones never start
            for future in futures:
                future.cancel()
            raise
    return cells
