"""Seed 004's on-disk layouts as raw product tables (read-only Kedro datasets).

Seed 004 (``tsar_pipeline``, ``../shared/reference/004_*.txt``) reads image
classification data from two layouts; each dataset here presents one as the raw table
the ingestion pipeline reads as ``raw_products`` (chosen in an environment's catalogue,
see ``conf/seed004_*``):

- :class:`SeedClassificationDataset`: ``images/train/*.jpg``, ``images/test/*.jpg``,
  ``train_metadata.csv``, ``test_metadata.csv`` with ``image_path,label`` (multiclass)
  or ``image_path,class_0..class_N`` (multilabel, 0/1 floats);
- :class:`SeedMetricLearningDataset`: ``metric_learning_dataset/{base,train,val}/<class>/<image>``.

Output columns: ``product_id`` (``<split>/<file stem>``, with the class folder for
metric learning), ``title`` (the file stem: ingestion requires a title),
``description`` (``""``), ``image_path`` (relative to the dataset root, e.g.
``images/train/x.jpg``), ``label`` (``str``) or the ``class_i`` columns (``int`` 0/1),
and ``split``. Rows whose image file does not exist are excluded and counted in a logged
quality message; the ingestion pipeline then applies its own checks.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

from vitrina.datasets.image_folder import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = ["SeedClassificationDataset", "SeedMetricLearningDataset"]

BASE_COLUMNS = ["product_id", "title", "description", "image_path"]
CLASS_COLUMN = re.compile(r"^class_(\d+)$")
KINDS = ("multiclass", "multilabel")
CLASSIFICATION_SPLITS = ("train", "test")
#: Seed 004's metric-learning folders: ``train`` to learn from, ``base`` the gallery that
#: ``val`` queries are searched in (classes of base/val need not occur in train).
METRIC_SPLITS = ("train", "val", "base")
METRIC_DIR = "metric_learning_dataset"


def _examples(values: list[str], n: int = 5) -> str:
    return ", ".join(values[:n]) + (", ..." if len(values) > n else "")


def _log_excluded(source: str, reason: str, excluded: list[str], total: int) -> None:
    if excluded:
        logger.warning(
            "seed004 %s: %d of %d rows excluded (%s): %s",
            source,
            len(excluded),
            total,
            reason,
            _examples(excluded),
        )


class _SeedLayoutDataset(AbstractDataset[None, pd.DataFrame]):
    """Shared read-only plumbing: path, metadata, save error, kedro-viz preview."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = PurePosixPath(Path(path).as_posix())
        self.metadata = metadata

    @property
    def root(self) -> Path:
        """The dataset root that ``image_path`` values are relative to."""
        return Path(self._path)

    def _require_dir(self, path: Path, what: str) -> None:
        if not path.is_dir():
            raise DatasetError(
                f"{type(self).__name__}: {what} '{path}' does not exist (expected seed 004's "
                f"layout under '{self.root}': {self._layout})"
            )

    def save(self, data: None) -> None:
        """Always raises: seed layouts are source data, never written by a pipeline.

        Raises:
            DatasetError: always.
        """
        raise DatasetError(f"{type(self).__name__} is read-only; it cannot save data.")

    def preview(self, nrows: int = 5) -> TablePreview:
        """First ``nrows`` rows for kedro-viz (``DataFrame.to_dict(orient="split")``); an
        empty table with the base columns when the layout is absent or invalid."""
        try:
            data = self.load().head(nrows)
        except DatasetError:
            data = pd.DataFrame(columns=[*BASE_COLUMNS, "split"])
        return TablePreview(data.to_dict(orient="split"))

    _layout = ""


class SeedClassificationDataset(_SeedLayoutDataset):
    """Seed 004's classification layout as a raw product table.

    Layout under ``path``::

        images/train/<name>.jpg   images/test/<name>.jpg
        train_metadata.csv        test_metadata.csv

    CSV columns: ``image_path`` (a file name under ``images/<split>/``, or a path
    relative to ``path``) and ``label`` (``kind="multiclass"``) or ``class_0 ..
    class_N`` (``kind="multilabel"``, 0/1 values, floats like ``1.0`` allowed).

    ``load()`` returns ``product_id`` (``<split>/<image stem>``), ``title`` (the stem),
    ``description`` (``""``), ``image_path`` (``images/<split>/<name>``), ``label``
    (``str``) or ``class_0..class_N`` (``int`` 0/1), ``split`` (``train`` | ``test``),
    train rows first. Rows with an empty ``image_path`` or ``label``, or whose image
    does not exist, are excluded and counted in a logged warning.

    Example ``catalog.yml`` entry::

        raw_products:
          type: vitrina.datasets.SeedClassificationDataset
          path: data/01_raw/seed004_multiclass
          kind: multiclass

    Raises (on load):
        DatasetError: a missing folder or CSV (naming the path), a CSV lacking columns
            (naming them), multilabel values other than 0/1 (column, count, examples),
            an unknown ``kind``.
    """

    _layout = "images/train/, images/test/, train_metadata.csv, test_metadata.csv"

    def __init__(
        self, path: str, kind: str = "multiclass", metadata: dict[str, Any] | None = None
    ) -> None:
        if kind not in KINDS:
            raise DatasetError(
                f"SeedClassificationDataset kind must be one of {KINDS}, got {kind!r}"
            )
        super().__init__(path, metadata)
        self._kind = kind

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "kind": self._kind}

    def _exists(self) -> bool:
        return all(
            (self.root / f"{s}_metadata.csv").is_file() and (self.root / "images" / s).is_dir()
            for s in CLASSIFICATION_SPLITS
        )

    def _read_csv(self, split: str) -> pd.DataFrame:
        csv = self.root / f"{split}_metadata.csv"
        if not csv.is_file():
            raise DatasetError(
                f"SeedClassificationDataset: '{csv}' does not exist (expected seed 004's "
                f"layout under '{self.root}': {self._layout})"
            )
        self._require_dir(self.root / "images" / split, "image folder")
        table = pd.read_csv(csv, dtype={"image_path": "string", "label": "string"})
        table.columns = [str(c).strip() for c in table.columns]
        classes = sorted(
            (c for c in table.columns if CLASS_COLUMN.match(c)),
            key=lambda c: int(CLASS_COLUMN.match(c).group(1)),
        )
        wanted = ["image_path", "label"] if self._kind == "multiclass" else ["image_path"]
        missing = [c for c in wanted if c not in table.columns]
        if self._kind == "multilabel" and not classes:
            missing.append("class_0..class_N")
        if missing:
            raise DatasetError(
                f"'{csv}' lacks column(s) {missing} for a {self._kind} layout; it has "
                f"{list(table.columns)}"
            )
        return table[wanted + (classes if self._kind == "multilabel" else [])]

    def _multi_hot(self, table: pd.DataFrame, csv: str) -> pd.DataFrame:
        classes = [c for c in table.columns if CLASS_COLUMN.match(c)]
        for col in classes:
            values = pd.to_numeric(table[col], errors="coerce")
            bad = ~values.isin([0, 1])
            if bad.any():
                shown = table.loc[bad, col].astype("string").fillna("<empty>").tolist()
                raise DatasetError(
                    f"'{csv}' column '{col}' must hold 0/1 values; {int(bad.sum())} row(s) hold "
                    f"others: {_examples(shown)} (image_path "
                    f"{_examples(table.loc[bad, 'image_path'].astype(str).tolist())})"
                )
            table[col] = values.astype(int)
        return table

    def _split_rows(self, split: str) -> pd.DataFrame:
        csv = f"{split}_metadata.csv"
        table = self._read_csv(split)
        n_rows = len(table)
        name = table["image_path"].str.strip()
        empty = name.isna() | (name == "")
        if self._kind == "multiclass":
            table["label"] = table["label"].str.strip()
            empty |= table["label"].isna() | (table["label"] == "")
        rows = (table.index[empty] + 2).astype(str).tolist()  # CSV line numbers
        _log_excluded(csv, "empty image_path or label (CSV lines)", rows, n_rows)
        table, name = table[~empty].copy(), name[~empty]
        if self._kind == "multilabel":
            table = self._multi_hot(table, str(self.root / csv))
        # a bare file name lives under images/<split>/; a longer path is relative to root
        rel = name.map(
            lambda v: v if (self.root / v).is_file() and "/" in v else f"images/{split}/{v}"
        )
        exists = rel.map(lambda p: (self.root / p).is_file()).astype(bool)
        _log_excluded(csv, "image file not found", rel[~exists].tolist(), n_rows)
        table, rel = table[exists], rel[exists]
        stems = rel.map(lambda p: PurePosixPath(p).stem)
        out = pd.DataFrame(
            {
                "product_id": [f"{split}/{s}" for s in stems],
                "title": stems.tolist(),
                "description": "",
                "image_path": rel.tolist(),
            }
        )
        labels = table.drop(columns=["image_path"]).reset_index(drop=True)
        return pd.concat([out, labels], axis=1).assign(split=split)

    def load(self) -> pd.DataFrame:
        """The raw product table (see the class docstring)."""
        self._require_dir(self.root, "dataset folder")
        frames = [self._split_rows(s) for s in CLASSIFICATION_SPLITS]
        if self._kind == "multilabel":
            train, test = (set(f.columns) for f in frames)
            if train != test:
                raise DatasetError(
                    f"train_metadata.csv and test_metadata.csv of '{self.root}' have different "
                    f"class columns: only in train {sorted(train - test)}, only in test "
                    f"{sorted(test - train)}"
                )
        return pd.concat(frames, ignore_index=True)


class SeedMetricLearningDataset(_SeedLayoutDataset):
    """Seed 004's metric-learning layout as a raw product table.

    Layout: ``<path>/metric_learning_dataset/{base,train,val}/<class name>/<image>`` (or
    ``path`` pointing at ``metric_learning_dataset`` itself). In seed 004 ``train`` is
    what the model learns from, ``base`` is the gallery and ``val`` the queries searched
    in it.

    ``load()`` returns ``product_id`` (``<split>/<class>/<image stem>``), ``title`` (the
    stem), ``description`` (``""``), ``image_path`` (relative to ``path``), ``label``
    (the class folder name) and ``split`` (``train`` | ``val`` | ``base``). Files that
    are not images (by suffix, :data:`vitrina.datasets.image_folder.IMAGE_SUFFIXES`) or
    that lie directly in a split folder, outside any class folder, are excluded and
    counted in a logged warning.

    Raises (on load):
        DatasetError: a missing split folder (naming the path), or no image at all.
    """

    _layout = "metric_learning_dataset/{base,train,val}/<class>/<image>"

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def _base(self) -> Path:
        nested = self.root / METRIC_DIR
        return nested if nested.is_dir() else self.root

    def _exists(self) -> bool:
        return all((self._base() / s).is_dir() for s in METRIC_SPLITS)

    def load(self) -> pd.DataFrame:
        """The raw product table (see the class docstring)."""
        self._require_dir(self.root, "dataset folder")
        base = self._base()
        rows: list[dict[str, str]] = []
        for split in METRIC_SPLITS:
            self._require_dir(base / split, f"'{split}' folder")
            excluded: list[str] = []
            files = sorted(p for p in (base / split).rglob("*") if p.is_file())
            for path in files:
                rel = path.relative_to(base / split)
                if path.suffix.lower() not in IMAGE_SUFFIXES or len(rel.parts) != 2:
                    excluded.append(rel.as_posix())
                    continue
                label = rel.parts[0]
                rows.append(
                    {
                        "product_id": f"{split}/{label}/{path.stem}",
                        "title": path.stem,
                        "description": "",
                        "image_path": path.relative_to(self.root).as_posix(),
                        "label": label,
                        "split": split,
                    }
                )
            _log_excluded(f"{split}/", "not an image in a class folder", excluded, len(files))
        if not rows:
            raise DatasetError(
                f"SeedMetricLearningDataset: no image under '{base}' ({self._layout})"
            )
        return pd.DataFrame(rows)
