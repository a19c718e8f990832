"""``CSVDataset``: kedro-datasets' ``pandas.CSVDataset`` with safe defaults for source tables."""

from __future__ import annotations

from typing import Any

import pandas as pd
from kedro.io import DatasetError
from kedro_datasets.pandas import CSVDataset as PandasCSVDataset

#: The only cells read as missing by default: empty ones and spreadsheet/database markers.
#: pandas' default list also turns the product titles "NA", "None", "nan", "null" into NaN.
NA_VALUES = ["", "#N/A", "NULL"]


def decode_error_message(data: bytes, encoding: str, source: str) -> str | None:
    """Where ``data`` stops being valid ``encoding``: byte offset, line and column, the line
    itself, and the catalogue setting that fixes it; None when it decodes."""
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        start = exc.start
    except LookupError:
        return None
    else:
        return None
    line = data.count(b"\n", 0, start) + 1
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", start)
    text = data[line_start : line_end if line_end >= 0 else len(data)]
    shown = text.decode(encoding, errors="replace")[:120]
    return (
        f"'{source}' is not valid {encoding}: byte 0x{data[start]:02x} at byte offset {start} "
        f"(line {line}, i.e. data row {line - 1} after the header; byte {start - line_start + 1} "
        f"of the line) cannot be decoded: {shown!r}. Give the file's encoding in its catalogue "
        "entry, e.g. `load_args: {encoding: cp1251}` (or latin-1, cp1252, utf-16)."
    )


class CSVDataset(PandasCSVDataset):
    """``pandas.CSVDataset`` for raw product tables (same arguments, ``load_args`` included).

    Differences, both about reading:

    * text stays text: ``keep_default_na=False`` with ``na_values=NA_VALUES`` (only empty
      cells and ``#N/A``/``NULL`` are missing), so a product titled "NA", "None" or "nan"
      is kept; set ``load_args.na_values`` to change the list;
    * a file that is not in its encoding (``load_args.encoding``, default UTF-8) fails with
      the byte offset, line and column of the first bad byte and the setting to fix it,
      instead of pandas' offset into an internal buffer.

    Example catalogue entry::

        raw_products:
          type: vitrina.datasets.CSVDataset
          filepath: data/01_raw/shop/products.csv
          load_args: {encoding: cp1251}

    Raises:
        DatasetError: on load, a decoding error (message as above).
    """

    DEFAULT_LOAD_ARGS: dict[str, Any] = {"keep_default_na": False, "na_values": NA_VALUES}

    def load(self) -> pd.DataFrame:
        try:
            return super().load()
        except (UnicodeDecodeError, DatasetError) as exc:
            # kedro wraps the parent's errors in a DatasetError
            cause = exc if isinstance(exc, UnicodeDecodeError) else exc.__cause__
            if not isinstance(cause, UnicodeDecodeError):
                raise
            path = str(self._get_load_path())
            encoding = self._load_args.get("encoding") or "utf-8"
            with self._fs.open(path, mode="rb") as handle:
                message = decode_error_message(handle.read(), encoding, path)
            raise DatasetError(message or f"'{path}': {exc}") from exc
