"""Ingestion nodes: raw table → canonical ``products`` + a data-quality report.

The canonical schema (``../shared/docs/ARCHITECTURE.md``): ``product_id``, ``title``,
``description``, ``image_path`` (relative to the image root), ``group_id`` and optional
label columns. Source column names come from ``parameters_ingestion.yml``.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

logger = logging.getLogger(__name__)

CORE_COLUMNS = ("product_id", "title", "description", "image", "group_id")
REPORT_COLUMNS = ["step", "reason", "n_rows", "examples"]

PRODUCTS_SCHEMA = pa.DataFrameSchema(
    {
        "product_id": pa.Column(str, unique=True, nullable=False),
        "title": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
        "description": pa.Column(str, nullable=False),
        "image_path": pa.Column(str, nullable=False),
        "group_id": pa.Column(str, nullable=False),
    },
    strict=False,
    coerce=True,
    name="products",
)


class IngestionError(ValueError):
    """The raw catalogue cannot be mapped to the canonical schema (names what is wrong)."""


def _source_columns(params: dict[str, Any]) -> dict[str, str]:
    """Every source column the configuration refers to, with what refers to it."""
    needed = {src: f"columns.{canon}" for canon, src in params["columns"].items() if src}
    needed.update(
        {src: f"labels.{canon}" for canon, src in (params.get("labels") or {}).items() if src}
    )
    for canon, spec in (params.get("derived_labels") or {}).items():
        for rule in spec.get("rules", []):
            needed.setdefault(rule["column"], f"derived_labels.{canon}")
    return needed


def passthrough_columns(columns: list[str], params: dict[str, Any]) -> list[str]:
    """Source columns ``ingestion.passthrough`` copies into ``products`` unchanged.

    ``passthrough`` lists column names or ``fnmatch`` patterns (``class_*``); the matches
    keep their name and dtype (e.g. a ``split`` column, 0/1 ``class_i`` columns), in the
    order of ``columns``.

    Raises:
        IngestionError: a listed name is absent or a pattern matches nothing (naming it
            and the columns found), or a match would overwrite a canonical column.
    """
    wanted = list(params.get("passthrough") or [])
    found = [str(c) for c in columns]
    out: list[str] = []
    for item in wanted:
        hits = [c for c in found if fnmatch.fnmatchcase(c, str(item))]
        if not hits:
            raise IngestionError(
                f"ingestion.passthrough names {item!r}, which matches no column of the raw "
                f"product table; it has {sorted(found)}"
            )
        out.extend(h for h in hits if h not in out)
    canonical = {"product_id", "title", "description", "image_path", "group_id"}
    canonical |= set(params.get("labels") or {}) | set(params.get("derived_labels") or {})
    clash = sorted(canonical & set(out))
    if clash:
        raise IngestionError(
            f"ingestion.passthrough columns {clash} would overwrite canonical or label columns"
        )
    return [c for c in found if c in out]


def validate_raw_products(raw: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Check the raw table has rows and every column the configuration maps.

    Args:
        raw: the source table as loaded by the catalogue (parquet, CSV, demo), ``[N, C]``.
        params: ``ingestion`` parameters (``columns``, ``labels``, ``derived_labels``).

    Returns:
        ``raw`` unchanged.

    Raises:
        IngestionError: the table is empty, ``columns`` lacks ``product_id``/``title``/
            ``description``/``image``, or a source column named in the configuration is
            absent (the message names the column, what refers to it and the columns found).
    """
    missing_keys = [
        k for k in ("product_id", "title", "description", "image") if k not in params["columns"]
    ]
    if missing_keys:
        raise IngestionError(f"ingestion.columns must map {missing_keys} to source columns")
    if raw is None or len(raw) == 0:
        raise IngestionError("The raw product table is empty (0 rows): nothing to ingest")
    missing = {src: ref for src, ref in _source_columns(params).items() if src not in raw.columns}
    if missing:
        detail = ", ".join(f"'{src}' (for {ref})" for src, ref in missing.items())
        raise IngestionError(
            f"The raw product table lacks column(s) {detail}; it has {sorted(map(str, raw.columns))}"
        )
    passthrough_columns(list(raw.columns), params)
    return raw


def _apply_rule(values: pd.Series, rule: dict[str, Any]) -> pd.Series:
    """Boolean mask of the rows a derivation rule matches."""
    values = values.astype("string")
    if "equals" in rule:
        return (values == str(rule["equals"])).fillna(False)
    if "in" in rule:
        return values.isin([str(v) for v in rule["in"]]).fillna(False)
    if "matches" in rule:
        pattern = re.compile(rule["matches"], flags=re.IGNORECASE)
        return (
            values.map(lambda v: bool(pattern.search(v)), na_action="ignore")
            .fillna(False)
            .astype(bool)
        )
    raise IngestionError(f"Derivation rule {rule} needs one of 'equals', 'in', 'matches'")


def derive_label(raw: pd.DataFrame, spec: dict[str, Any]) -> pd.Series:
    """A label column from ordered rules; the first matching rule wins, else ``default``.

    Args:
        raw: the source table.
        spec: ``{"default": value | None, "rules": [{"column", "equals"|"in"|"matches",
            "value"}, ...]}``.

    Returns:
        A ``string`` series aligned with ``raw`` (``<NA>`` where no rule matched and the
        default is null).
    """
    out = pd.Series(spec.get("default"), index=raw.index, dtype="string")
    decided = pd.Series(False, index=raw.index)
    for rule in spec.get("rules", []):
        hit = _apply_rule(raw[rule["column"]], rule) & ~decided
        out[hit] = str(rule["value"])
        decided |= hit
    return out


def _clean_text(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def map_to_canonical_schema(raw: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Rename source columns, derive labels and format image paths.

    Args:
        raw: the validated source table.
        params: ``ingestion`` parameters.

    Returns:
        A table with ``product_id``, ``title``, ``description``, ``image_path``,
        ``group_id`` (``product_id`` when the source has no group column, or it is
        mapped to null) and the configured label columns, all as pandas ``string`` dtype;
        empty strings become ``<NA>``. Whitespace is stripped. Then the
        ``passthrough`` columns, unchanged (:func:`passthrough_columns`).
    """
    cols = params["columns"]
    out = pd.DataFrame(index=raw.index)
    for canon in ("product_id", "title", "description"):
        out[canon] = _clean_text(raw[cols[canon]])
    template = params.get("image_path_template") or "{value}"
    image_values = _clean_text(raw[cols["image"]])
    out["image_path"] = image_values.map(
        lambda v: template.format(value=v) if isinstance(v, str) else pd.NA, na_action="ignore"
    ).astype("string")
    out["group_id"] = (
        _clean_text(raw[cols["group_id"]]) if cols.get("group_id") else out["product_id"]
    )
    out["group_id"] = out["group_id"].fillna(out["product_id"])
    for canon, src in (params.get("labels") or {}).items():
        if src:  # null: this catalogue has no such label
            out[canon] = _clean_text(raw[src])
    for canon, spec in (params.get("derived_labels") or {}).items():
        out[canon] = derive_label(raw, spec)
    for col in passthrough_columns(list(raw.columns), params):
        out[col] = raw[col]  # unchanged: name, values and dtype
    return out.reset_index(drop=True)


def _safe_relative_path(image_root: Path, value: str) -> str | None:
    """``value`` as a normalised POSIX path inside ``image_root``, or None if it escapes."""
    root = image_root.resolve()
    target = (root / value).resolve()
    try:
        return target.relative_to(root).as_posix()
    except ValueError:
        return None


def _report_row(reason: str, dropped: pd.DataFrame) -> dict[str, Any]:
    examples = dropped["product_id"].astype("string").fillna("<missing id>").head(5).tolist()
    return {
        "step": "ingestion",
        "reason": reason,
        "n_rows": int(len(dropped)),
        "examples": ";".join(examples),
    }


def sample_products(
    products: pd.DataFrame, max_products: int | None, stratify_by: str | None, seed: int
) -> pd.DataFrame:
    """A seeded sample of at most ``max_products`` rows, stratified by a column if present.

    Each stratum keeps ``round(max_products * share)`` rows (at least one), largest
    remainders first, so the label distribution is preserved; row order is the original.
    """
    if not max_products or len(products) <= max_products:
        return products
    rng = np.random.default_rng(seed)
    if not stratify_by or stratify_by not in products.columns:
        keep = np.sort(rng.choice(len(products), size=max_products, replace=False))
        return products.iloc[keep].reset_index(drop=True)
    strata = products[stratify_by].astype("string").fillna("<NA>")
    counts = strata.value_counts()
    quota = counts / counts.sum() * max_products
    alloc = np.maximum(np.floor(quota), 1).astype(int)
    remainder = (quota - np.floor(quota)).sort_values(ascending=False)
    for key in remainder.index:
        if alloc.sum() >= max_products:
            break
        if alloc[key] < counts[key]:
            alloc[key] += 1
    while alloc.sum() > max_products:  # more strata than max_products: trim the largest
        alloc[alloc.idxmax()] -= 1
    chosen: list[int] = []
    for key, n in alloc.items():
        idx = np.flatnonzero((strata == key).to_numpy())
        chosen.extend(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())
    return products.iloc[np.sort(chosen)].reset_index(drop=True)


def clean_products(
    canonical: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop unusable rows, counting each reason; sample; validate the canonical schema.

    Rows are dropped, in this order, for: an empty required column (``missing_<col>``),
    a duplicate ``product_id`` (the first is kept), an image path that escapes
    ``image_root`` (``unsafe_image_path``, e.g. ``../../etc/passwd``), and an image file
    that does not exist (``missing_image``). ``max_products`` then samples the rest.

    Args:
        canonical: output of :func:`map_to_canonical_schema`.
        params: ``ingestion`` parameters (``image_root``, ``required``, ``max_products``,
            ``stratify_by``, ``seed``).

    Returns:
        ``products`` (validated, plain ``str`` columns) and the quality report with
        columns ``step, reason, n_rows, examples`` (one row per reason, then ``kept``).

    Raises:
        IngestionError: no product is left (the message lists the drop counts).
        pandera.errors.SchemaError: the output violates the canonical schema.
    """
    image_root = Path(params["image_root"])
    rows: list[dict[str, Any]] = []
    df = canonical
    required = [
        ("image_path" if c == "image" else c) for c in params.get("required", CORE_COLUMNS[:4])
    ]
    for col in required:
        bad = df[col].isna()
        if bad.any():
            rows.append(_report_row(f"missing_{col}", df[bad]))
            df = df[~bad]
    # A description that is not required may be empty; the schema wants a string.
    df = df.assign(description=df["description"].fillna(""))
    dup = df["product_id"].duplicated(keep="first")
    if dup.any():
        rows.append(_report_row("duplicate_product_id", df[dup]))
        df = df[~dup]
    safe = df["image_path"].map(lambda v: _safe_relative_path(image_root, v))
    unsafe = safe.isna()
    if unsafe.any():
        rows.append(_report_row("unsafe_image_path", df[unsafe]))
    df = df[~unsafe].assign(image_path=safe[~unsafe])
    exists = df["image_path"].map(lambda p: (image_root / p).is_file()).astype(bool)
    if (~exists).any():
        rows.append(_report_row("missing_image", df[~exists]))
        df = df[exists]
    if df.empty:
        counts = ", ".join(f"{r['reason']}={r['n_rows']}" for r in rows) or "none"
        raise IngestionError(
            f"No product left after cleaning {len(canonical)} rows (dropped: {counts}); "
            f"check ingestion.image_root='{image_root}' and the column mapping"
        )
    sampled = sample_products(
        df.reset_index(drop=True),
        params.get("max_products"),
        params.get("stratify_by"),
        params.get("seed", 42),
    )
    if len(sampled) < len(df):
        rows.append(
            {
                "step": "ingestion",
                "reason": "not_sampled_max_products",
                "n_rows": len(df) - len(sampled),
                "examples": "",
            }
        )
    rows.append({"step": "ingestion", "reason": "kept", "n_rows": len(sampled), "examples": ""})
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    for r in rows:
        logger.info("ingestion: %-26s %6d rows", r["reason"], r["n_rows"])
    products = sampled.astype({c: object for c in sampled.columns})
    products = products.where(products.notna(), None)
    return PRODUCTS_SCHEMA.validate(products), report
