"""The torch probing backend against scikit-learn: same objective, same MLP, same protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vitrina.models.probes import ProbeTask, build_probe, probe_dtype, probe_matrix_sklearn
from vitrina.models.torch_logreg import LogisticHeads, lbfgs
from vitrina.models.torch_mlp import MlpJob, train_mlps
from vitrina.models.torch_probes import check_params, probe_matrix, validation_part
from vitrina.splits import validation_split


def blobs(n: int, d: int, k: int, seed: int, sep: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``float32 [n, d]`` Gaussian features whose first ``k`` dimensions carry class ``y``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, :k] += sep * np.eye(k, dtype=np.float32)[y]
    x[:, k] += 0.5 * x[:, 0]  # correlated features, as embeddings have
    return x, y


def heads_proba(heads: LogisticHeads, params: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    z = heads.logits(params, x)[:, 0]
    if heads.n_out == 1:
        p1 = torch.sigmoid(z)
        return torch.cat([1 - p1, p1], dim=1).numpy()
    return torch.softmax(z, dim=1).numpy()


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize(
    ("preconditioned", "dtype"), [(True, np.float32), (False, np.float32), (True, np.float64)]
)
def test_batched_heads_reach_scikit_learns_minimiser(k, preconditioned, dtype):
    x, y = blobs(600, 12, k, seed=k)
    xs = torch.from_numpy(StandardScaler().fit_transform(x.astype(dtype)))
    cs = np.logspace(-2, 2, 4)
    heads = LogisticHeads(xs, torch.from_numpy(y), k, torch.tensor(cs))
    kwargs = {"precondition": heads.preconditioner(), "refresh_every": 5} if preconditioned else {}
    tol = 1e-6 if dtype == np.float32 else 1e-9
    params, iters = lbfgs(
        heads, torch.zeros(len(cs), heads.n_params, dtype=xs.dtype), tol=tol, **kwargs
    )
    assert (iters < 1000).all()  # converged, not stopped
    assert params.dtype == xs.dtype
    for i, c in enumerate(cs):
        ref = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(xs.numpy(), y)
        # same objective: scikit-learn's minimiser has (nearly) our minimum
        w = np.concatenate([ref.coef_.T, ref.intercept_[None]]).astype(dtype)
        if k == 2:
            w = w[:, :1]
        f_ref, _ = heads(torch.from_numpy(w.reshape(1, -1)), torch.tensor([i]))
        f_ours, _ = heads(params[i : i + 1], torch.tensor([i]))
        assert abs(float(f_ref[0]) - float(f_ours[0])) < 1e-6
        proba = heads_proba(heads, params[i : i + 1], xs)
        # float64 (the probing step's logreg dtype) reaches the minimiser far more closely
        bound = 2e-3 if dtype == np.float32 else 1e-5
        assert np.abs(proba - ref.predict_proba(xs.numpy())).max() < bound, c


def test_each_head_converges_as_if_fitted_alone():
    x, y = blobs(400, 10, 3, seed=1)
    xs = torch.from_numpy(StandardScaler().fit_transform(x))
    cs = torch.tensor([0.01, 1.0, 100.0], dtype=torch.float64)
    batch = LogisticHeads(xs, torch.from_numpy(y), 3, cs)
    together, iters = lbfgs(batch, torch.zeros(3, batch.n_params), tol=1e-7)
    assert len(set(iters.tolist())) > 1  # they stop at different iterations
    for i in range(3):
        alone = LogisticHeads(xs, torch.from_numpy(y), 3, cs[i : i + 1])
        one, _ = lbfgs(alone, torch.zeros(1, alone.n_params), tol=1e-7)
        assert torch.allclose(
            torch.from_numpy(heads_proba(batch, together[i : i + 1], xs)),
            torch.from_numpy(heads_proba(alone, one, xs)),
            atol=1e-4,
        )


def sklearn_mlp(x, y, params, seed=42):
    pipe = build_probe("mlp", params, seed=seed).fit(x, y)
    return pipe, torch.from_numpy(pipe[0].transform(x))


@pytest.mark.parametrize(
    ("early_stopping", "dtype"), [(True, np.float32), (False, np.float32), (True, np.float64)]
)
def test_mlp_is_scikit_learns_mlp_step_for_step(early_stopping, dtype):
    params = {"hidden_layer_sizes": [16], "max_iter": 40, "early_stopping": early_stopping}
    jobs, refs = [], []
    for n, d, k in [(500, 8, 2), (450, 8, 4)]:
        x, y = blobs(n, d, k, seed=n, sep=0.8)
        pipe, xs = sklearn_mlp(x.astype(dtype), y, params)
        assert xs.dtype == torch.from_numpy(np.zeros(1, dtype)).dtype
        jobs.append(MlpJob(xs, y, xs[:100], k))
        refs.append(pipe)
    out = train_mlps(jobs, hidden_layer_sizes=(16,), max_iter=40, n_iter_no_change=20,
                     early_stopping=early_stopping, seed=42)  # fmt: skip
    # float64 leaves only float64 rounding between the two: 1e-4 -> 1e-10
    atol = 1e-4 if dtype == np.float32 else 1e-10
    for r, pipe in zip(out, refs, strict=True):
        mlp = pipe[-1]
        assert r.epochs == mlp.n_iter_
        assert mlp.coefs_[0].dtype == dtype
        if early_stopping:  # same initial weights, validation slice and minibatches
            assert np.allclose(r.curve, mlp.validation_scores_, atol=1e-6)
        else:
            assert np.allclose(-np.array(r.curve), mlp.loss_curve_, rtol=1e-3)
        ref = pipe[-1].predict_proba(
            jobs[0].x_test.numpy() if r is out[0] else jobs[1].x_test.numpy()
        )
        assert np.abs(r.proba - ref).max() < atol


def test_mlp_job_does_not_depend_on_its_batch_mates_or_padding():
    x, y = blobs(300, 6, 2, seed=3)
    xs = torch.from_numpy(StandardScaler().fit_transform(x))
    wide_x, wide_y = blobs(320, 11, 5, seed=4)
    wide = torch.from_numpy(StandardScaler().fit_transform(wide_x))
    kwargs = {"hidden_layer_sizes": (8,), "max_iter": 15, "seed": 7}
    alone = train_mlps([MlpJob(xs, y, xs[:50], 2)], **kwargs)[0]
    mixed = train_mlps([MlpJob(wide, wide_y, wide[:50], 5), MlpJob(xs, y, xs[:50], 2)], **kwargs)
    assert mixed[1].epochs == alone.epochs
    assert np.abs(mixed[1].proba - alone.proba).max() < 1e-5
    assert mixed[0].proba.shape == (50, 5) and np.allclose(mixed[0].proba.sum(1), 1, atol=1e-5)


def test_unsupported_settings_name_the_reference_backend():
    with pytest.raises(ValueError, match=r"\['solver'\].*probing.backend: sklearn"):
        check_params("mlp", {"solver": "sgd", "alpha": 0.1})
    with pytest.raises(ValueError, match="unknown probe 'svm'"):
        check_params("svm", {})
    check_params("logreg", {"C": "sweep", "sweep_steps": 3, "max_iter": 100})
    check_params("mlp", {"dtype": "float64"})
    with pytest.raises(ValueError, match="'float16'"):
        probe_dtype({"dtype": "float16"})


def test_validation_part_is_the_tasks_split_recomputed_when_the_task_changes():
    _, tasks = matrix()
    task = tasks[1]
    first = validation_part(task, 0.2, 3)
    expected = validation_split(task.y[task.train], task.groups[task.train], 0.2, 3)
    assert np.array_equal(first, expected) and validation_part(task, 0.2, 3) is first
    relabelled = ProbeTask(task.name, task.rows, task.y[::-1].copy(), task.groups, task.train)
    other = validation_part(relabelled, 0.2, 3)
    assert other is not first
    assert np.array_equal(
        other, validation_split(relabelled.y[task.train], task.groups[task.train], 0.2, 3)
    )


def matrix(seed=0):
    """Two tasks over 360 shared rows of two modalities (one informative, one noise)."""
    rng = np.random.default_rng(seed)
    n = 360
    groups = np.arange(n) // 2
    gender = np.where(rng.random(n // 2) < 0.5, "f", "m")[groups]
    kind = rng.choice(["a", "b", "c"], n // 2)[groups]
    text = rng.normal(size=(n, 12)).astype(np.float32)
    text[:, 0] += np.where(gender == "m", 2.0, -2.0)
    text[:, 1:4] += 3.0 * (kind[:, None] == np.array(["a", "b", "c"]))
    features = {"text": text, "image": rng.normal(size=(n, 6)).astype(np.float32)}
    test = np.isin(groups, rng.choice(n // 2, n // 8, replace=False))
    tasks = [
        ProbeTask("gender", np.arange(n), gender, groups.astype(str), ~test),
        ProbeTask("kind", np.arange(n)[::-1].copy(), kind[::-1], groups[::-1].astype(str), ~test[::-1]),
    ]  # fmt: skip
    return features, tasks


def test_torch_matrix_agrees_with_scikit_learn_and_repeats():
    features, tasks = matrix()
    probes = {
        "logreg": {"C": "sweep", "sweep_steps": 3},
        "mlp": {"hidden_layer_sizes": [16]},
    }
    seen = []
    first = probe_matrix(features, tasks, probes, seed=5, on_cell=seen.append)
    # in two threads at once: the cells come in another order, with the same results
    seen_parallel = []
    parallel = probe_matrix(
        features, tasks, probes, seed=5, workers=2, on_cell=seen_parallel.append
    )
    ref = probe_matrix_sklearn(features, tasks, probes, seed=5)
    assert len(first) == len(seen) == len(parallel) == len(seen_parallel) == 2 * 2 * 2
    key = lambda c: (c.task, c.modality, c.probe)  # noqa: E731
    by_key = {key(c): c for c in ref}
    again = {key(c): c for c in parallel}
    for cell in first:
        repeat = again[key(cell)]
        assert cell.metrics == repeat.metrics and cell.info == repeat.info  # reproducible
        other = by_key[key(cell)]
        assert abs(cell.metrics["macro_f1"] - other.metrics["macro_f1"]) <= 0.01, key(cell)
        if cell.probe == "logreg":
            assert abs(np.log10(cell.info["C"]) - np.log10(other.info["C"])) <= 1.0 + 1e-9
        else:
            assert cell.info["epochs"] > 0 and cell.seconds > 0
    f1 = {key(c): c.metrics["macro_f1"] for c in first}
    assert min(f1["gender", "text", "logreg"], f1["kind", "text", "logreg"]) > 0.85
    assert f1["gender", "text", "mlp"] > 0.9 and f1["kind", "text", "mlp"] > 0.6  # chance 1/3
    assert f1["gender", "image", "logreg"] < 0.65  # the noise modality stays near chance


def test_a_failing_unit_fails_the_parallel_matrix():
    features, tasks = matrix()
    gender = tasks[0]
    one_class = ProbeTask(
        "one", gender.rows, np.full(len(gender.y), "f"), gender.groups, gender.train
    )
    with pytest.raises(ValueError, match=">= 2 classes"):
        probe_matrix(features, [gender, one_class], {"mlp": {"hidden_layer_sizes": [8]}}, workers=2)
