"""MLP probes in torch: many perceptrons trained at once, each as scikit-learn trains it.

The torch backend of the probing step's ``mlp`` probe. Each job is scikit-learn's
``MLPClassifier(solver="adam", activation="relu", random_state=seed)`` on standardised
features, reproduced step for step:

- the same random stream: a ``numpy.random.RandomState(seed)`` draws the Glorot-uniform
  weights and intercepts (``sqrt(6 / (fan_in + fan_out))``, layer by layer), then the
  early-stopping validation slice (``train_test_split`` with ``validation_fraction``,
  stratified for two classes, as ``MLPClassifier`` does), then every epoch's permutation
  (``sklearn.utils.shuffle`` of the previous order), so both backends see the same
  initial weights, validation slice and minibatches;
- the same arithmetic: minibatches of ``batch_size`` (the last one smaller), the batch's
  mean log-loss plus ``alpha / 2 * ||W||^2 / batch`` (weights, not intercepts), Adam with
  the bias correction folded into the step size, early stopping on validation accuracy
  (an epoch improves when it beats the best by more than ``tol``; training stops after
  more than ``n_iter_no_change`` epochs without one and keeps the best epoch's weights).
  Two classes use one logistic output (here a softmax over a logit fixed at 0 and one
  free logit, the same function).

Only float rounding differs (another summation order). Jobs train in their features'
dtype, as ``MLPClassifier`` trains in its input's: the probing step feeds both backends
float64 (``probes.mlp.dtype``), since float32 rounding, amplified by ~10^4 Adam steps and
the early-stopping decisions, moved H&M cells by up to 0.014 macro-F1 between them. The jobs of one call (every task
and modality of a model) are trained as one batch of matrix products (``torch.bmm``),
each with its own data, classes, optimiser state and stopping epoch; a stopped job
leaves the batch. No library batches independent perceptrons like this (scikit-learn
fits one per call on the CPU), hence this module; the forward and backward passes are
written out (two matrix products per layer), which is faster than autograd at this size
and exact about which weights are frozen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import shuffle

_NEG = -1e9  # logit of a padded (absent) class


@dataclass
class MlpJob:
    """One perceptron to train.

    Attributes:
        x_train, x_test: ``float32 [n, D]`` standardised features on the device (jobs
            narrower than the widest of their call are zero-padded, which changes
            nothing but the cost).
        y_train: ``int64 [n]`` class indices in ``0 .. n_classes-1`` (sorted labels).
        n_classes: number of classes (>= 2).
    """

    x_train: torch.Tensor
    y_train: np.ndarray
    x_test: torch.Tensor
    n_classes: int


@dataclass
class MlpResult:
    """``proba``: ``[n_test, n_classes]`` in the jobs' dtype; ``epochs`` run; best validation accuracy;
    ``seconds`` from the start of the batch until this job stopped; ``curve``: the score
    of every epoch (``MLPClassifier.validation_scores_``, or minus ``loss_curve_``)."""

    proba: np.ndarray
    epochs: int
    best_score: float
    seconds: float
    curve: list[float]


def _stack(rows: list[torch.Tensor]) -> torch.Tensor:
    """Zero-pad tensors along dim 0 to a common length and stack them."""
    n = max(1, max(r.shape[0] for r in rows))
    out = rows[0].new_zeros((len(rows), n, *rows[0].shape[1:]))
    for j, r in enumerate(rows):
        out[j, : r.shape[0]] = r
    return out


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x [n, D]`` with zero columns up to ``width``."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


class _Layers:
    """``J`` perceptrons' parameters in one flat ``[J, T]`` buffer, with per-layer views
    ``w[l] [J, fan_in, fan_out]`` and ``b[l] [J, fan_out]`` (so Adam updates the buffer
    in a handful of operations)."""

    def __init__(self, flat: torch.Tensor, sizes: list[int]) -> None:
        self.flat = flat
        self.w, self.b = [], []
        at, n = 0, flat.shape[0]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            self.w.append(flat[:, at : at + fan_in * fan_out].view(n, fan_in, fan_out))
            at += fan_in * fan_out
            self.b.append(flat[:, at : at + fan_out])
            at += fan_out

    def forward(
        self, x: torch.Tensor, logit_mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Inputs of every layer ``[x, hidden...]`` and the masked logits ``[J, B, O]``."""
        acts, h = [x], x
        for layer, (w, b) in enumerate(zip(self.w, self.b, strict=True)):
            h = torch.baddbmm(b[:, None, :], h, w)
            if layer < len(self.w) - 1:
                h = h.relu_()
                acts.append(h)
        return acts, h.add_(logit_mask)

    def gradient(
        self,
        acts: list[torch.Tensor],
        delta: torch.Tensor,
        reg: torch.Tensor,
    ) -> torch.Tensor:
        """Flat ``[J, T]`` gradient from the output error ``delta [J, B, O]`` (already
        divided by the batch size), plus ``reg [J, 1, 1] * W`` (alpha / batch size)."""
        grads: list[torch.Tensor] = []
        for layer in range(len(self.w) - 1, -1, -1):
            w = self.w[layer]
            gw = torch.baddbmm(w * reg, acts[layer].transpose(1, 2), delta)
            grads = [gw.flatten(1), delta.sum(1), *grads]
            if layer:
                delta = torch.ops.aten.threshold_backward(
                    torch.bmm(delta, w.transpose(1, 2)), acts[layer], 0.0
                )
        return torch.cat(grads, dim=1)


def _initial(
    d_real: int, n_classes: int, sizes: list[int], rs: np.random.RandomState, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One job's flat parameters as ``MLPClassifier._init_coef`` draws them (weights then
    intercepts, layer by layer; rows for padded inputs are 0), its trainable-output mask
    and its logit mask, both ``[O]``."""
    n_out = sizes[-1]
    real_out = 1 if n_classes == 2 else n_classes
    cols = slice(1, 2) if n_classes == 2 else slice(0, n_classes)
    parts = []
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = layer == len(sizes) - 2
        rows, width = (d_real if layer == 0 else fan_in), (real_out if last else fan_out)
        bound = np.sqrt(6.0 / (rows + width))
        w = torch.zeros(fan_in, n_out if last else fan_out, dtype=dtype)
        b = torch.zeros(n_out if last else fan_out, dtype=dtype)
        w_draw = torch.from_numpy(rs.uniform(-bound, bound, (rows, width))).to(dtype)
        b_draw = torch.from_numpy(rs.uniform(-bound, bound, width)).to(dtype)
        w[:rows, cols if last else slice(None)] = w_draw
        b[cols if last else slice(None)] = b_draw
        parts += [w.flatten(), b]
    trainable = torch.zeros(n_out, dtype=dtype)
    trainable[cols] = 1.0
    logit_mask = torch.full((n_out,), _NEG, dtype=dtype)
    logit_mask[:n_classes] = 0.0
    return torch.cat(parts), trainable, logit_mask


def _schedule(
    orders: list[np.ndarray], t0: torch.Tensor, cfg: dict[str, float], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """One epoch's minibatches for the live jobs (``orders``: each job's row order), and
    each step's per-job constants.

    Returns ``idx [J, S, B]`` (row indices, 0 where padded), ``weight [J, S, B, 1]``
    (1 / batch size, 0 where padded), ``reg [J, S, 1, 1]`` (alpha / batch size),
    ``w1, w2 [J, S, 1]`` (Adam's moment weights, 0 when the job has no batch at that
    step), ``lr [J, S, 1]`` (the bias-corrected step size) and ``t`` (Adam's step count
    after the epoch).
    """
    bsz = int(cfg["batch_size"])
    n_steps = max(int(np.ceil(len(o) / bsz)) for o in orders)
    idx = torch.zeros(len(orders), n_steps * bsz, dtype=torch.long)
    valid = torch.zeros(len(orders), n_steps * bsz, dtype=dtype)
    for r, order in enumerate(orders):
        idx[r, : len(order)] = torch.from_numpy(order)
        valid[r, : len(order)] = 1.0
    idx, valid = idx.view(len(orders), n_steps, bsz), valid.view(len(orders), n_steps, bsz)
    nb = valid.sum(2)
    active = (nb > 0).double()
    t = t0[:, None] + active.cumsum(1)
    b1, b2 = cfg["beta_1"], cfg["beta_2"]
    lr = cfg["learning_rate_init"] * torch.sqrt(1 - b2**t) / (1 - b1 ** t.clamp(min=1))
    size = nb.clamp(min=1.0)
    return {
        "idx": idx,
        "weight": (valid / size[..., None])[..., None],
        "reg": (cfg["alpha"] / size)[..., None, None],
        "w1": (active * (1 - b1)).to(dtype)[..., None],
        "w2": (active * (1 - b2)).to(dtype)[..., None],
        "lr": (lr * active).to(dtype)[..., None],
        "t": t[:, -1],
    }


def _split(job: MlpJob, fraction: float, rs: np.random.RandomState, early: bool):
    """``MLPClassifier``'s validation slice: ``(fit rows, validation rows)`` in its order."""
    rows = np.arange(len(job.y_train))
    if not early:
        return rows, rows[:0]
    binarized = LabelBinarizer().fit_transform(job.y_train).astype(bool)
    stratify = binarized if binarized.shape[1] == 1 else None
    fit, val = train_test_split(rows, random_state=rs, test_size=fraction, stratify=stratify)
    return fit, val


def train_mlps(
    jobs: list[MlpJob],
    *,
    hidden_layer_sizes: tuple[int, ...] = (256,),
    alpha: float = 1e-4,
    batch_size: int = 64,
    learning_rate_init: float = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    max_iter: int = 500,
    n_iter_no_change: int = 10,
    tol: float = 1e-4,
    early_stopping: bool = True,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> list[MlpResult]:
    """Train one MLP per job, all at once, as ``MLPClassifier(random_state=seed)`` would.

    Args:
        jobs: the perceptrons; each gets its own ``RandomState(seed)`` (one
            ``random_state`` serves every probe of the scikit-learn backend), so a job's
            result depends neither on its batch-mates nor on the device.
        early_stopping: stop on validation accuracy; otherwise on the training loss
            (``tol``, ``n_iter_no_change``) and keep the last weights, as scikit-learn.
        Other arguments: ``MLPClassifier``'s, same meaning and defaults.

    Returns:
        One :class:`MlpResult` per job, in order.

    Raises:
        ValueError: a job with fewer than 2 classes.
    """
    start = time.perf_counter()
    dev, dtype = jobs[0].x_train.device, jobs[0].x_train.dtype
    d = max(j.x_train.shape[1] for j in jobs)  # narrower jobs are zero-padded
    if any(j.n_classes < 2 for j in jobs):
        raise ValueError(
            f"train_mlps: every job needs >= 2 classes; got {[j.n_classes for j in jobs]}"
        )
    cfg = {
        "batch_size": batch_size,
        "alpha": alpha,
        "learning_rate_init": learning_rate_init,
        "beta_1": beta_1,
        "beta_2": beta_2,
    }
    n_out = max(j.n_classes for j in jobs)
    sizes = [d, *[int(h) for h in hidden_layer_sizes], n_out]
    streams = [np.random.RandomState(int(seed)) for _ in jobs]
    init = [
        _initial(j.x_train.shape[1], j.n_classes, sizes, rs, dtype)
        for j, rs in zip(jobs, streams, strict=True)
    ]
    splits = [
        _split(j, validation_fraction, rs, early_stopping)
        for j, rs in zip(jobs, streams, strict=True)
    ]
    layers = _Layers(torch.stack([i[0] for i in init]).to(dev), sizes)
    trainable = torch.stack([i[1] for i in init]).to(dev)[:, None, :]
    logit_mask = torch.stack([i[2] for i in init]).to(dev)[:, None, :]
    adam_m, adam_v = torch.zeros_like(layers.flat), torch.zeros_like(layers.flat)
    t_step = torch.zeros(len(jobs), dtype=torch.float64)
    eye = torch.eye(n_out, device=dev, dtype=dtype)
    # x and the one-hot target side by side (one gather per step), in the split's order
    data, x_val, y_val = [], [], []
    for job, (fit, val) in zip(jobs, splits, strict=True):
        x = _pad(job.x_train, d)
        y = torch.as_tensor(job.y_train, device=dev)
        fit_t, val_t = torch.as_tensor(fit, device=dev), torch.as_tensor(val, device=dev)
        data.append(torch.cat([x[fit_t], eye[y[fit_t]]], dim=1))
        x_val.append(x[val_t])
        y_val.append(y[val_t])
    data, x_val, y_val = _stack(data), _stack(x_val), _stack(y_val)
    orders = [np.arange(len(fit)) for fit, _ in splits]
    n_fit = np.array([len(fit) for fit, _ in splits], dtype=float)
    n_val = torch.tensor([max(1, len(val)) for _, val in splits], device=dev)
    val_rows = torch.arange(x_val.shape[1], device=dev)[None, :] < n_val[:, None]

    live = list(range(len(jobs)))  # job ids still training, in batch order
    best = layers.flat.clone()
    best_score = np.full(len(jobs), -np.inf)
    no_gain = np.zeros(len(jobs), dtype=int)
    epochs = np.zeros(len(jobs), dtype=int)
    stopped_at = np.zeros(len(jobs))
    curves: list[list[float]] = [[] for _ in jobs]
    for _epoch in range(max_iter):
        for j in live:
            orders[j] = shuffle(orders[j], random_state=streams[j])
        plan = _schedule([orders[j] for j in live], t_step, cfg, dtype)
        t_step = plan.pop("t")
        plan = {k: v.to(dev) for k, v in plan.items()}
        rows = torch.arange(len(live), device=dev)[:, None]
        loss_sum = torch.zeros(len(live), dtype=torch.float64, device=dev)
        for s in range(plan["idx"].shape[1]):
            chunk = data[rows, plan["idx"][:, s]]
            target = chunk[..., d:]
            acts, z = layers.forward(chunk[..., :d], logit_mask)
            if not early_stopping:
                logp = torch.log_softmax(z, dim=2) * (plan["weight"][:, s] > 0)
                loss_sum -= (logp * target).sum((1, 2), dtype=torch.float64)
            delta = torch.softmax(z, dim=2).sub_(target).mul_(plan["weight"][:, s])
            grad = layers.gradient(acts, delta.mul_(trainable), plan["reg"][:, s])
            adam_m.lerp_(grad, plan["w1"][:, s])
            adam_v.lerp_(grad.square_(), plan["w2"][:, s])
            layers.flat.addcdiv_(adam_m * plan["lr"][:, s], adam_v.sqrt().add_(epsilon), value=-1)
        # End of epoch: score, keep the best weights, decide who stops.
        if early_stopping:
            _, z = layers.forward(x_val, logit_mask)
            hits = (z.argmax(2) == y_val) & val_rows
            scores = (hits.sum(1) / n_val).double().cpu().numpy()
        else:
            penalty = sum((w.double() ** 2).sum((1, 2)) for w in layers.w).cpu().numpy()
            scores = -(loss_sum.cpu().numpy() + 0.5 * alpha * penalty) / n_fit[live]
        improved, keep = [], []
        for r, j in enumerate(live):
            epochs[j] += 1
            curves[j].append(float(scores[r]))
            no_gain[j] = no_gain[j] + 1 if scores[r] < best_score[j] + tol else 0
            if scores[r] > best_score[j] or not early_stopping:  # sklearn keeps the last
                best_score[j] = max(best_score[j], scores[r])
                improved.append(r)
            if no_gain[j] > n_iter_no_change or epochs[j] == max_iter:
                stopped_at[j] = time.perf_counter() - start
            else:
                keep.append(r)
        if improved:
            sel = torch.tensor(improved, device=dev)
            best[torch.tensor([live[r] for r in improved], device=dev)] = layers.flat[sel]
        if not keep:
            break
        if len(keep) < len(live):
            sel = torch.tensor(keep, device=dev)
            layers = _Layers(layers.flat[sel], sizes)
            adam_m, adam_v, t_step = adam_m[sel], adam_v[sel], t_step[keep]
            trainable, logit_mask = trainable[sel], logit_mask[sel]
            data, x_val, y_val = data[sel], x_val[sel], y_val[sel]
            n_val, val_rows = n_val[sel], val_rows[sel]
            live = [live[r] for r in keep]

    results = []
    masks = torch.stack([i[2] for i in init]).to(dev)[:, None, :]
    for j, job in enumerate(jobs):
        x_test = _pad(job.x_test, d)[None]
        _, z = _Layers(best[j : j + 1], sizes).forward(x_test, masks[j : j + 1])
        proba = torch.softmax(z[0], dim=1)[:, : job.n_classes]
        results.append(
            MlpResult(
                proba=proba.cpu().numpy(),
                epochs=int(epochs[j]),
                best_score=float(best_score[j]),
                seconds=float(stopped_at[j]),
                curve=curves[j],
            )
        )
    return results
