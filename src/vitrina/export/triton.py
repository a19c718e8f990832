"""A Triton Inference Server model repository for an exported ONNX classifier.

Layout (Triton's "model repository" docs)::

    <repository>/<model_name>/config.pbtxt
    <repository>/<model_name>/labels.txt          classifiers: one class per line
    <repository>/<model_name>/<version>/model.onnx

``config.pbtxt`` is derived from the ONNX graph itself (:func:`onnx_tensor_specs`): input
and output names, data types and dims without the batch axis; ``max_batch_size`` is the
``max_batch_size`` setting when the graph's axis 0 is symbolic (0 otherwise: no batching).
``dynamic_batching`` and ``instance_group`` come from the settings, as seed 004's Triton
callback writes them. A repository that already holds versions of the model gets the next
version number; no version folder is ever overwritten.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitrina.utils import atomic_path

#: ONNX ``TensorProto`` element type name → Triton ``DataType``.
TRITON_TYPES = {
    "FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "BFLOAT16": "TYPE_BF16",
    "DOUBLE": "TYPE_FP64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64", "BOOL": "TYPE_BOOL",
    "STRING": "TYPE_STRING",
}  # fmt: skip
LABELS_FILE = "labels.txt"
KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")


class TritonRepositoryError(ValueError):
    """Bad Triton settings, or a model whose interface differs from the repository's."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, Triton data type, dims (``-1`` for a symbolic
    axis) and whether axis 0 is symbolic (the batch)."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    batched: bool


def onnx_tensor_specs(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """``(inputs, outputs)`` of an ONNX file's graph (initialisers excluded).

    Raises:
        TritonRepositoryError: a data type Triton has no name for.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        ttype = value.type.tensor_type
        elem = onnx.TensorProto.DataType.Name(ttype.elem_type)
        if elem not in TRITON_TYPES:
            raise TritonRepositoryError(f"{value.name}: ONNX type {elem} has no Triton type")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
        batched = bool(dims) and dims[0] == -1
        return TensorSpec(
            value.name, TRITON_TYPES[elem], tuple(dims[1:] if batched else dims), batched
        )

    inputs = [spec(v) for v in model.graph.input if v.name not in init]
    return inputs, [spec(v) for v in model.graph.output]


def triton_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Normalised ``triton`` settings (defaults in brackets): ``max_batch_size`` (32),
    ``dynamic_batching`` ``{preferred_batch_size: [8, 32], max_queue_delay_microseconds:
    100}`` (``null`` or ``false``: none), ``instance_group`` ``{count: 1, kind: KIND_CPU,
    gpus: []}``.

    Raises:
        TritonRepositoryError: a non-positive size or count, an unknown kind, GPUs for a
            CPU group, or a preferred size over ``max_batch_size``.
    """
    s = dict(settings or {})
    max_batch = int(s.get("max_batch_size", 32))
    batching = s.get("dynamic_batching", {})
    if batching not in (None, False):
        batching = {"preferred_batch_size": [8, 32], "max_queue_delay_microseconds": 100,
                    **(batching if isinstance(batching, dict) else {})}  # fmt: skip
        sizes = [int(v) for v in batching["preferred_batch_size"]]
        if any(v < 1 or v > max_batch for v in sizes):
            raise TritonRepositoryError(
                f"triton.dynamic_batching.preferred_batch_size {sizes} must lie in "
                f"1..max_batch_size ({max_batch})"
            )
        batching = {"preferred_batch_size": sizes,
                    "max_queue_delay_microseconds": int(batching["max_queue_delay_microseconds"])}  # fmt: skip
    group = {"count": 1, "kind": "KIND_CPU", "gpus": [], **(s.get("instance_group") or {})}
    if max_batch < 1 or int(group["count"]) < 1:
        raise TritonRepositoryError(
            f"triton.max_batch_size ({max_batch}) and instance_group.count "
            f"({group['count']}) must be >= 1"
        )
    if group["kind"] not in KINDS:
        raise TritonRepositoryError(f"triton.instance_group.kind must be one of {KINDS}, got {group['kind']!r}")  # fmt: skip
    if group["gpus"] and group["kind"] == "KIND_CPU":
        raise TritonRepositoryError("triton.instance_group.gpus needs kind KIND_GPU")
    return {
        "model_name": s.get("model_name"),
        "max_batch_size": max_batch,
        "dynamic_batching": batching or None,
        "instance_group": {
            "count": int(group["count"]),
            "kind": group["kind"],
            "gpus": [int(g) for g in group["gpus"]],
        },  # fmt: skip
    }


def _tensor_block(spec: TensorSpec, labels: bool) -> str:
    dims = ", ".join(str(d) for d in spec.dims)
    label = f'\n    label_filename: "{LABELS_FILE}"' if labels else ""
    return f'  {{\n    name: "{spec.name}"\n    data_type: {spec.data_type}\n    dims: [ {dims} ]{label}\n  }}'


def config_pbtxt(name: str, onnx_path: str | Path, settings: dict[str, Any], labels: bool) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``).

    Args:
        name: the Triton model name.
        onnx_path: the ONNX file the dims and names are read from.
        settings: :func:`triton_settings`' output.
        labels: give the (first) output ``label_filename`` (classifiers, not embeddings).

    Raises:
        TritonRepositoryError: an input's axis 0 is fixed while batching is asked for.
    """
    inputs, outputs = onnx_tensor_specs(onnx_path)
    batched = all(t.batched for t in inputs + outputs)
    max_batch = settings["max_batch_size"] if batched else 0
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch}"]
    lines.append("input [\n" + ",\n".join(_tensor_block(t, False) for t in inputs) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor_block(t, labels and i == 0)
                                           for i, t in enumerate(outputs)) + "\n]")  # fmt: skip
    batching = settings["dynamic_batching"]
    if batching and max_batch:
        sizes = ", ".join(str(v) for v in batching["preferred_batch_size"])
        lines.append(
            f"dynamic_batching {{\n  preferred_batch_size: [ {sizes} ]\n"
            f"  max_queue_delay_microseconds: {batching['max_queue_delay_microseconds']}\n}}"
        )
    group = settings["instance_group"]
    gpus = f"\n    gpus: [ {', '.join(map(str, group['gpus']))} ]" if group["gpus"] else ""
    lines.append(
        f"instance_group [\n  {{\n    count: {group['count']}\n    kind: {group['kind']}{gpus}\n  }}\n]"
    )
    return "\n".join(lines) + "\n"


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _interface(text: str) -> str:
    """The part of a config that all versions share: name, inputs and outputs (not
    ``max_batch_size``, batching or instances)."""
    head = text.split("dynamic_batching")[0].split("instance_group")[0]
    return "\n".join(line for line in head.splitlines() if not line.startswith("max_batch_size"))


def write_repository(
    repository: str | Path,
    name: str,
    onnx_path: str | Path,
    settings: dict[str, Any],
    labels: list[str] | None,
) -> dict[str, Any]:
    """Add ``onnx_path`` to a Triton repository as the next version of model ``name``.

    The same ONNX file and config as the latest version (a rerun) add nothing and return
    that version. An existing model keeps every version folder; ``config.pbtxt`` and the labels file
    are replaced only when batching or instance settings changed (the previous config
    is kept as ``config.pbtxt.before-v<version>``).

    Returns:
        ``{"model_dir", "version", "config", "onnx", "unchanged"}`` (paths as strings).

    Raises:
        TritonRepositoryError: the repository's model has other inputs, outputs or labels
            (serve it under another ``triton.model_name``).
    """
    model_dir = Path(repository) / name
    text = config_pbtxt(name, onnx_path, settings, labels is not None)
    config_path, labels_path = model_dir / "config.pbtxt", model_dir / LABELS_FILE
    versions = _versions(model_dir)
    if versions and config_path.is_file() and config_path.read_text() == text:
        latest = model_dir / str(versions[-1]) / "model.onnx"
        if latest.is_file() and filecmp.cmp(latest, onnx_path, shallow=False):
            return {"model_dir": str(model_dir), "version": versions[-1], "config": str(config_path),
                    "onnx": str(latest), "unchanged": True}  # fmt: skip
    version = (versions or [0])[-1] + 1
    if config_path.is_file():
        old = config_path.read_text()
        old_labels = labels_path.read_text().splitlines() if labels_path.is_file() else None
        if _interface(old) != _interface(text) or old_labels != labels:
            raise TritonRepositoryError(
                f"{model_dir} serves a model with other inputs, outputs or labels than "
                f"{onnx_path}; set triton.model_name to add it as a new model"
            )
        if old != text:
            with atomic_path(model_dir / f"config.pbtxt.before-v{version}") as tmp:
                shutil.copy2(config_path, tmp)
    model_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(model_dir / str(version), is_dir=True) as tmp:
        shutil.copy2(onnx_path, tmp / "model.onnx")
        (tmp / "source.json").write_text(json.dumps({"onnx": str(onnx_path)}))
    if labels is not None:
        with atomic_path(labels_path) as tmp:
            tmp.write_text("\n".join(labels) + "\n")
    with atomic_path(config_path) as tmp:
        tmp.write_text(text)
    record = {"model_dir": str(model_dir), "version": version, "config": str(config_path),
              "onnx": str(model_dir / str(version) / "model.onnx"), "unchanged": False}  # fmt: skip
    return record
