"""The DeepMatcher/Magellan entity-matching benchmark in Ditto's line format.

Each split file (``train.txt``, ``valid.txt``, ``test.txt``) holds one pair per line::

    COL title VAL sony dsc-w120 COL price VAL 129.0 <TAB> COL title VAL ... <TAB> 1

the left record, the right record and the label (``0``/``1``). Records carry no id, so an
item id is derived from the record's text: ``L`` or ``R`` (its side) and the first 12 hex
digits of the SHA-1 of the record line, so a record shared by many pairs is one item.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

SPLIT_FILES = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}
_COL = re.compile(r"COL (\S+) VAL ?")


@dataclass
class ErMagellanData:
    """One benchmark dataset.

    Attributes:
        name: the dataset folder relative to the benchmark root (``Textual/Abt-Buy``).
        items: one row per distinct record: ``item_id``, ``side`` (``left``/``right``),
            one string column per attribute (empty string when the record lacks it).
        pairs: ``left_id, right_id, label, split`` (split ``train``/``val``/``test``).
        attributes: the attribute names, in file order.
    """

    name: str
    items: pd.DataFrame
    pairs: pd.DataFrame
    attributes: list[str]


def parse_record(text: str) -> dict[str, str]:
    """``"COL a VAL x y COL b VAL z"`` → ``{"a": "x y", "b": "z"}``.

    Raises:
        ValueError: the text does not start with ``COL <name> VAL``.
    """
    text = text.strip()
    parts = _COL.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise ValueError(f"not a 'COL <attr> VAL <value>' record: {text[:80]!r}")
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def _item_id(side: str, text: str) -> str:
    return side[0].upper() + hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:12]


def read_er_magellan(path: str | Path, name: str | None = None) -> ErMagellanData:
    """Read one dataset folder (``train.txt``, ``valid.txt``, ``test.txt``).

    Raises:
        FileNotFoundError: a split file is missing.
        ValueError: a line does not have three tab-separated fields or a 0/1 label
            (file and line number given).
    """
    path = Path(path)
    records: dict[str, dict[str, Any]] = {}
    pairs, attributes = [], {}
    for split, filename in SPLIT_FILES.items():
        file = path / filename
        if not file.is_file():
            raise FileNotFoundError(f"ER-Magellan split file '{file}' does not exist")
        with file.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 3 or fields[2].strip() not in ("0", "1"):
                    raise ValueError(
                        f"{file}:{lineno}: expected '<left>\\t<right>\\t<0|1>', got {line[:80]!r}"
                    )
                ids = []
                for side, text in (("left", fields[0]), ("right", fields[1])):
                    item_id = _item_id(side, text)
                    if item_id not in records:
                        try:
                            attrs = parse_record(text)
                        except ValueError as exc:
                            raise ValueError(f"{file}:{lineno}: {exc}") from exc
                        attributes.update(dict.fromkeys(attrs))
                        records[item_id] = {"item_id": item_id, "side": side, **attrs}
                    ids.append(item_id)
                pairs.append((ids[0], ids[1], int(fields[2]), split))
    attrs = list(attributes)
    items = pd.DataFrame(list(records.values()), columns=["item_id", "side", *attrs])
    items[attrs] = items[attrs].fillna("")
    pairs_df = pd.DataFrame(pairs, columns=["left_id", "right_id", "label", "split"])
    return ErMagellanData(name=name or path.name, items=items, pairs=pairs_df, attributes=attrs)


def find_er_magellan(root: str | Path) -> list[Path]:
    """Dataset folders under ``root`` (those holding ``train.txt``), sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.glob("**/train.txt"))


class ErMagellanDataset(AbstractDataset[ErMagellanData, None]):
    """Read-only Kedro dataset for one ER-Magellan dataset folder.

    Example catalogue entry::

        pair_matching_source:
          type: vitrina.datasets.ErMagellanDataset
          path: ../shared/data/er_magellan/Textual/Abt-Buy
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def load(self) -> ErMagellanData:
        try:
            return read_er_magellan(self._path, name=f"{self._path.parent.name}/{self._path.name}")
        except (OSError, ValueError) as exc:
            raise DatasetError(f"ER-Magellan dataset '{self._path}': {exc}") from exc

    def save(self, data: ErMagellanData) -> None:
        raise DatasetError("ErMagellanDataset is read-only")

    def _exists(self) -> bool:
        return all((self._path / f).is_file() for f in SPLIT_FILES.values())

    def preview(self) -> TablePreview:
        """kedro-viz preview: pairs and positives per split."""
        if not self._exists():
            return TablePreview({"columns": ["status"], "index": [0], "data": [["missing"]]})
        data = self.load()
        counts = data.pairs.groupby("split", sort=False)["label"].agg(["size", "sum"]).reset_index()
        return TablePreview(
            {
                "columns": ["split", "pairs", "positives"],
                "index": list(range(len(counts))),
                "data": counts.values.tolist(),
            }
        )
