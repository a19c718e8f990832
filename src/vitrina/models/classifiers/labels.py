"""Targets of the three kinds from a catalogue table, and which classes are kept.

* multiclass and metric learning: one label column (values compared as stripped strings);
* multilabel: the tags of a row are ``column=value`` for each of several label columns
  (``labels: [colour, gender]`` → ``colour=red``, ``gender=female``), the items of a list
  column (``label_list: tags``; a list, or a string split on ``;``/``|``/``,``), or the
  names of 0/1 indicator columns that are 1 (``indicator_columns: "class_*"``, seed 004's
  ``class_0..class_N`` layout; a list of names or an fnmatch pattern).

A multilabel row's tags are stored as one string joined by :data:`TAG_SEPARATOR` so that
the items table stays a flat parquet file.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import numpy as np
import pandas as pd

TAG_SEPARATOR = "|"


def label_columns(spec: dict[str, Any], columns: list[str] | None = None) -> list[str]:
    """The catalogue columns a task reads its labels from (``columns``: the table's, to
    expand an ``indicator_columns`` pattern)."""
    if spec.get("indicator_columns"):
        wanted = spec["indicator_columns"]
        if isinstance(wanted, str):
            return sorted(c for c in (columns or []) if fnmatch.fnmatch(c, wanted)) or [wanted]
        return [str(c) for c in wanted]
    if spec.get("label_list"):
        return [str(spec["label_list"])]
    if spec.get("labels"):
        return [str(c) for c in spec["labels"]]
    if spec.get("label"):
        return [str(spec["label"])]
    raise ValueError(
        f"task {spec.get('name', '?')!r}: set `label` (multiclass, metric_learning), or "
        "`labels` (several columns) / `label_list` (a list column) for multilabel"
    )


def _clean(values: pd.Series) -> pd.Series:
    out = values.astype("string").str.strip()
    return out.mask(out.isin(["", "<NA>"]))


def row_tags(frame: pd.DataFrame, spec: dict[str, Any]) -> pd.Series:
    """Per row, its sorted tags joined by ``|`` ('' when it has none).

    Raises:
        ValueError: an indicator column with values other than 0/1, naming it.
    """
    if spec.get("indicator_columns"):
        names = label_columns(spec, list(frame.columns))
        values = frame[names].apply(pd.to_numeric, errors="coerce")
        bad = [c for c in names if not values[c].isin([0, 1]).all()]
        if bad:
            raise ValueError(f"indicator columns {bad} hold values other than 0/1")
        on = values.to_numpy() > 0.5
        return pd.Series(
            [TAG_SEPARATOR.join(np.asarray(names)[row]) for row in on], index=frame.index
        )
    if spec.get("label_list"):
        column = frame[spec["label_list"]]

        def split(value: Any) -> list[str]:
            if isinstance(value, (list, tuple, np.ndarray)):
                items = [str(v) for v in value]
            elif value is None or (isinstance(value, float) and np.isnan(value)):
                items = []
            else:
                items = re.split(r"[;|,]", str(value))
            return sorted({i.strip() for i in items if i and i.strip()})

        return column.map(lambda v: TAG_SEPARATOR.join(split(v)))
    parts = []
    for col in spec["labels"]:
        values = _clean(frame[col])
        parts.append(("" + col + "=" + values).where(values.notna(), ""))
    joined = pd.concat(parts, axis=1).apply(
        lambda row: TAG_SEPARATOR.join(sorted(t.replace(TAG_SEPARATOR, "/") for t in row if t)),
        axis=1,
    )
    return joined if len(frame) else pd.Series([], dtype=str)


def single_labels(frame: pd.DataFrame, column: str) -> pd.Series:
    """The label column as stripped strings (missing and empty values as NA)."""
    return _clean(frame[column])


def multi_hot(tags: pd.Series, classes: list[str]) -> np.ndarray:
    """``float32 [N, C]`` multi-hot of ``|``-joined tags over ``classes`` (others ignored)."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(tags), len(classes)), dtype=np.float32)
    for row, value in enumerate(tags.astype(str)):
        for tag in value.split(TAG_SEPARATOR) if value else []:
            if tag in index:
                out[row, index[tag]] = 1.0
    return out


def class_indices(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """``int64 [N]`` positions of ``labels`` in ``classes``.

    Raises:
        ValueError: a label that is not a class, naming up to five.
    """
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels.astype(str)) - set(index))
    if unknown:
        raise ValueError(f"labels not among the {len(classes)} classes: {unknown[:5]}")
    return labels.astype(str).map(index).to_numpy(np.int64)
