"""Probing nodes: probes per model and the comparison report (the task splits are
:func:`vitrina.splits.make_probing_splits`)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from vitrina.datasets.embeddings import Embeddings  # noqa: E402
from vitrina.models.probes import Cell, ProbeTask, probe_matrix_sklearn  # noqa: E402
from vitrina.models.torch_probes import probe_matrix  # noqa: E402
from vitrina.training.threads import auto_threads  # noqa: E402
from vitrina.utils import limit_threads, resolve_device  # noqa: E402

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ["model", "modality", "task", "probe", "metric", "value", "n_train", "n_test"]


def check_embedding_ids(embeddings: Embeddings, probing_splits: pd.DataFrame) -> None:
    """Fail clearly when the embeddings do not cover the probed products.

    Raises:
        ValueError: naming how many products lack an embedding, with examples (the NPZ
            belongs to another catalogue or is stale).
    """
    needed = pd.unique(probing_splits["product_id"].astype(str))
    have = set(embeddings.ids.tolist())
    missing = [str(pid) for pid in needed if pid not in have]
    if missing:
        raise ValueError(
            f"The embeddings ({len(have)} ids) lack {len(missing)} of the {len(needed)} probed products "
            f"(e.g. {missing[:5]}): they were computed for other products; rerun `kedro run --pipeline=embeddings`"
        )


def matrix_inputs(
    embeddings: Embeddings, probing_splits: pd.DataFrame, modalities: list[str]
) -> tuple[dict[str, np.ndarray], list[ProbeTask]]:
    """One feature matrix per modality for all probed products, and each task's rows of it.

    Returns:
        ``{modality: float32 [N, D]}`` over the probed products (first-seen order) and one
        :class:`~vitrina.models.probes.ProbeTask` per task (in ``probing_splits`` order).
    """
    ids = pd.unique(probing_splits["product_id"].astype(str))
    emb = embeddings.align(ids)
    position = pd.Series(np.arange(len(ids)), index=ids)
    tasks = [
        ProbeTask(
            name=task,
            rows=position[df["product_id"].astype(str)].to_numpy(),
            y=df["label"].astype(str).to_numpy(),
            groups=df["group_id"].astype(str).to_numpy(),
            train=(df["split"] == "train").to_numpy(),
        )
        for task, df in probing_splits.groupby("task", sort=False)
    ]
    return {m: emb.modality(m) for m in modalities}, tasks


def probe_embeddings(
    embeddings: Embeddings,
    probing_splits: pd.DataFrame,
    params: dict[str, Any],
    device: str = "auto",
) -> pd.DataFrame:
    """Fit every probe on every modality × task of one model and score it on the test split.

    ``probing.backend`` picks the fitting code: ``torch`` (the default,
    :func:`vitrina.models.torch_probes.probe_matrix` on ``device``; each modality's matrix
    is gathered once for all tasks) or ``sklearn`` (the reference,
    :func:`vitrina.models.probes.fit_probe` per cell, on the CPU). Both follow the same
    protocol on the same splits. One progress bar spans the matrix (on a terminal), and
    the log gives each cell's scores and seconds.

    Args:
        embeddings: one model's embeddings (ids, text ``[N, Dt]``, image ``[N, Di]``).
        probing_splits: output of :func:`make_probing_splits`.
        params: ``probing`` parameters (``backend``, ``torch_threads``, ``torch_workers``,
            ``modalities``, ``probes``, ``seed``).
        device: ``embeddings.device`` (``auto``: CUDA when available); torch backend only.

    Returns:
        Long table ``modality, task, probe, metric, value, n_train, n_test``, ordered by
        task, modality, probe.

    Raises:
        ValueError: the embeddings lack probed products (see :func:`check_embedding_ids`),
            an unknown backend, or probe parameters the torch backend does not support.
    """
    check_embedding_ids(embeddings, probing_splits)
    seed = int(params.get("seed", 42))
    backend = str(params.get("backend", "torch"))
    if backend not in ("torch", "sklearn"):
        raise ValueError(f"probing.backend must be 'torch' or 'sklearn', got {backend!r}")
    modalities = list(params.get("modalities", ["text", "image", "text+image"]))
    probes = {k: dict(v or {}) for k, v in params["probes"].items()}
    features, tasks = matrix_inputs(embeddings, probing_splits, modalities)
    counts = {t.name: (int(t.train.sum()), int((~t.train).sum())) for t in tasks}
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(
        total=len(tasks) * len(modalities) * len(probes),
        desc=f"probing ({backend})",
        unit="cell",
        disable=None,
    )

    def record(cell: Cell) -> None:
        n_train, n_test = counts[cell.task]
        rows.extend(
            {
                "modality": cell.modality,
                "task": cell.task,
                "probe": cell.probe,
                "metric": metric,
                "value": value,
                "n_train": n_train,
                "n_test": n_test,
            }
            for metric, value in cell.metrics.items()
        )
        logger.info(
            "probing: %-12s %-10s %-6s macro_f1=%.3f acc=%.3f %s%.2fs",
            cell.task,
            cell.modality,
            cell.probe,
            cell.metrics["macro_f1"],
            cell.metrics["accuracy"],
            "".join(f"{k}={v:.3g} " for k, v in cell.info.items()),
            cell.seconds,
        )
        bar.update(1)

    threads = params.get("torch_threads")
    with bar:
        if backend == "sklearn":
            device = "cpu"
            probe_matrix_sklearn(features, tasks, probes, seed=seed, on_cell=record)
        else:
            device = resolve_device(device)
            on_cpu = device == "cpu"
            workers = (auto_threads(params.get("torch_workers", "auto")) or 1) if on_cpu else 1
            with limit_threads(threads if on_cpu else None):
                probe_matrix(
                    features,
                    tasks,
                    probes,
                    seed=seed,
                    device=device,
                    workers=workers,
                    on_cell=record,
                )
    logger.info(
        "probing: %d cells (%d tasks x %d modalities x %d probes) in %.1f s, backend %s on %s",
        bar.total,
        len(tasks),
        len(modalities),
        len(probes),
        time.perf_counter() - start,
        backend,
        device,
    )
    order = {"task": [t.name for t in tasks], "modality": modalities, "probe": list(probes)}
    out = pd.DataFrame(rows, columns=METRIC_COLUMNS[1:])
    keys = [out[k].map({v: i for i, v in enumerate(vals)}) for k, vals in order.items()]
    out = out.assign(_t=keys[0], _m=keys[1], _p=keys[2]).sort_values(
        ["_t", "_m", "_p"], kind="stable"
    )
    return out.drop(columns=["_t", "_m", "_p"]).reset_index(drop=True)


def combine_probing_metrics(**per_model: pd.DataFrame) -> pd.DataFrame:
    """One table for all models: ``model, modality, task, probe, metric, value, n_train, n_test``."""
    frames = [df.assign(model=name) for name, df in per_model.items()]
    return pd.concat(frames, ignore_index=True)[METRIC_COLUMNS]


def plot_probing_metrics(metrics: pd.DataFrame, params: dict[str, Any]) -> plt.Figure:
    """Grouped bar chart: one panel per task × probe, modalities on x, one bar per model."""
    metric = params.get("chart_metric", "macro_f1")
    data = metrics[metrics["metric"] == metric]
    tasks = list(dict.fromkeys(data["task"]))
    probes = list(dict.fromkeys(data["probe"]))
    models = list(dict.fromkeys(data["model"]))
    modalities = list(dict.fromkeys(data["modality"]))
    fig, axes = plt.subplots(
        len(probes),
        max(1, len(tasks)),
        figsize=(3.4 * max(1, len(tasks)), 3.0 * len(probes)),
        squeeze=False,
        sharey=True,
    )
    width = 0.8 / max(1, len(models))
    colours = plt.get_cmap("tab10").colors
    for r, probe in enumerate(probes):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            sub = data[(data["task"] == task) & (data["probe"] == probe)]
            for k, model in enumerate(models):
                vals = [
                    sub[(sub["model"] == model) & (sub["modality"] == m)]["value"].mean()
                    for m in modalities
                ]
                xs = np.arange(len(modalities)) + (k - (len(models) - 1) / 2) * width
                ax.bar(xs, vals, width, label=model, color=colours[k % len(colours)])
            ax.set_xticks(np.arange(len(modalities)), modalities, fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_title(f"{task} · {probe}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if c == 0:
                ax.set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncols=len(models), fontsize=8, frameon=False)
    fig.suptitle(
        f"Probing: {metric} on the test split (higher is better)", fontsize=11, x=0.01, ha="left"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def _markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "—" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def write_probing_summary(
    metrics: pd.DataFrame, task_report: pd.DataFrame, params: dict[str, Any]
) -> str:
    """Markdown summary: the tasks (kept, skipped, dropped classes) and a table per metric."""
    metric = params.get("chart_metric", "macro_f1")
    lines = ["# Probing summary", "", "## Tasks", "", _markdown_table(task_report), ""]
    data = metrics[metrics["metric"] == metric]
    if not data.empty:
        table = data.pivot_table(
            index=["task", "modality"], columns=["model", "probe"], values="value", sort=False
        ).reset_index()
        table.columns = [
            " / ".join(c).strip(" /") if isinstance(c, tuple) else c for c in table.columns
        ]
        lines += [f"## {metric} on the test split", "", _markdown_table(table), ""]
        best = data.loc[data.groupby("task", sort=False)["value"].idxmax()]
        lines += ["## Best per task", ""]
        lines += [
            f"- **{r.task}**: {r.model} · {r.modality} · {r.probe} = {r.value:.3f}"
            for r in best.itertuples()
        ]
        lines.append("")
    return "\n".join(lines)


def probing_metrics_for_mlflow(metrics: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{"<model>.<modality>.<task>.<probe>.<metric>": {"value": v, "step": 0}}`` for MLflow."""
    out = {}
    for r in metrics.itertuples():
        if isinstance(r.value, float) and math.isnan(r.value):
            continue
        key = f"{r.model}.{r.modality.replace('+', '_')}.{r.task}.{r.probe}.{r.metric}"
        out[key] = {"value": float(r.value), "step": 0}
    return out
