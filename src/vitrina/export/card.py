"""``model_card.md``: what a consumer of the exported files needs to call them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitrina.utils import atomic_path

from .graph import INPUT_NAME, OUTPUT_NAMES

_ACTIVATION = {
    "multiclass": "softmax over the classes gives probabilities",
    "multilabel": "sigmoid per class; a label is on at or above its threshold (config.json `thresholds`)",
    "metric_learning": "L2-normalised embeddings; classify by nearest gallery items (cosine)",
}


def _table(rows: list[tuple[str, Any]]) -> str:
    return "\n".join(["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]])


def model_card(config: dict[str, Any], report: dict[str, Any]) -> str:
    """The card's Markdown.

    Args:
        config: the classifier's ``config.json``.
        report: the export report (:func:`vitrina.export.classifier.export_classifier`):
            ``artefacts``, ``checks``, ``int8``, ``git_commit``, ``source``, ``output_dim``.
    """
    kind, size = config["kind"], int(config["image_size"])
    out = OUTPUT_NAMES[kind]
    inputs = _table([
        ("name", f"`{INPUT_NAME}`"), ("shape", f"[batch, 3, {size}, {size}] (NCHW, RGB)"),
        ("dtype", "float32"), ("image size", f"{size} px"),
        ("normalisation", "pixels / 255, then (x - mean) / std per channel"),
        ("mean", config["image_mean"]), ("std", config["image_std"]),
    ])  # fmt: skip
    outputs = _table([
        ("name", f"`{out}`"), ("shape", f"[batch, {report['output_dim']}]"),
        ("dtype", "float32"), ("meaning", _ACTIVATION[kind]),
    ])  # fmt: skip
    classes = config["classes"]
    metrics = {k: v for k, v in config.items() if k.startswith("best_")}
    lines = [
        f"# {config['task']}: {kind} image classifier",
        "",
        f"Backbone `{config.get('backbone')}`. Source checkpoint: `{config.get('source_checkpoint')}` "
        f"(exported from `{report['source']}`). Git commit: `{report.get('git_commit')}`; "
        f"trained at commit `{config.get('git_commit')}`.",
        "", "## Inputs", "", inputs, "", "## Outputs", "", outputs, "",
        f"## Labels ({len(classes)})", "",
        ", ".join(f"`{c}`" for c in classes[:200]) + (" …" if len(classes) > 200 else ""),
        "", "## Metrics", "",
    ]  # fmt: skip
    lines += [
        f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()
    ]
    for name, value in (report.get("test_metrics") or {}).items():
        lines.append(f"- test {name}: {value:.4f}")
    int8 = report.get("int8")
    if int8:
        verdict = "accepted" if int8["accepted"] else "**REJECTED** (drop over tolerance)"
        lines.append(
            f"- int8 {int8['metric']} on test: fp32 {int8['fp32']:.2f} → int8 {int8['int8']:.2f} "
            f"points (drop {int8['drop']:.2f}, tolerance {int8['tolerance']:.2f}): {verdict}; "
            f"top-1 agreement {int8['top1_agreement']:.3f} on {int8['n']} images"
        )
    lines += ["", "## Artefacts", "", "| file | format | checked against eager PyTorch |",
              "|---|---|---|"]  # fmt: skip
    for fmt, path in report["artefacts"].items():
        check = report["checks"].get(fmt, {})
        shown = ", ".join(f"{k.removeprefix('max_abs_diff_')}: {v:.2e}" for k, v in check.items())
        lines.append(f"| `{Path(path).name}` | {fmt} | {shown or 'accuracy (see int8)'} |")
    return "\n".join(lines) + "\n"


def write_model_card(path: str | Path, config: dict[str, Any], report: dict[str, Any]) -> Path:
    """Write :func:`model_card` atomically to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(model_card(config, report))
    return path
