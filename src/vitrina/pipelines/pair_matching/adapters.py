"""Adapters: every pair-matching input layout → one shape, :class:`PairData`.

Layouts (``pair_matching.source``):

1. ``competition`` — the seed system's parquet layout: an items table with text
   embeddings (and text), an items table with image embeddings, and a pairs table
   (``variantid1, variantid2, target``); embedding columns hold arrays.
2. ``pairs`` — Vitrina products + an embeddings NPZ + a pairs table
   (``left_id, right_id, label``).
3. ``er_magellan`` — the DeepMatcher/Magellan benchmark in Ditto's format, with its own
   train/valid/test splits (:mod:`vitrina.datasets.er_magellan`).
4. ``catalogue`` — pairs built from a catalogue: products sharing ``group_id`` (H&M
   ``product_code``: colour variants) are matches; the hard negatives are each product's
   nearest neighbours with another ``group_id``.

Bad input is handled the same way everywhere: pairs naming unknown ids raise (count and
examples); self-pairs and duplicate pairs (in either order) are dropped and counted;
items of the competition layout whose embedding has NaN are excluded and counted (and so
are their pairs; Vitrina's own NPZ embeddings are finite by construction);
embeddings of different dimensions raise. Every count lands in the ``report`` table
(``reason, count, detail``).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GroupShuffleSplit

from vitrina.datasets.er_magellan import ErMagellanData
from vitrina.embeddings import Embeddings
from vitrina.models.candidates import CandidateIndex
from vitrina.models.embedders import l2_normalise

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ["left_id", "right_id", "label", "split"]
REPORT_COLUMNS = ["reason", "count", "detail"]
SPLITS = ("train", "val", "test")


@dataclass
class PairData:
    """Items, their embeddings and labelled pairs, whatever the source layout.

    Attributes:
        items: ``item_id`` (str, unique) and the item's text/attribute columns (and
            ``group_id`` for catalogues).
        embeddings: per-item vectors (ids = ``items.item_id``); ``image`` may have
            dimension 0 (text-only sources).
        pairs: ``left_id, right_id, label`` (0/1) and ``split`` (``train``/``val``/
            ``test``) once split.
        report: ``reason, count, detail``: what was dropped or excluded, and why.
    """

    items: pd.DataFrame
    embeddings: Embeddings
    pairs: pd.DataFrame
    report: list[dict[str, Any]] = field(default_factory=list)

    def report_frame(self) -> pd.DataFrame:
        """The report as a table (``reason, count, detail``)."""
        return pd.DataFrame(self.report, columns=REPORT_COLUMNS)


def _note(
    report: list[dict[str, Any]], reason: str, count: int, detail: str = "", dropped: bool = True
) -> None:
    """Append a report row; log it (a warning when ``dropped`` rows are counted)."""
    report.append({"reason": reason, "count": int(count), "detail": detail})
    if dropped and count:
        logger.warning("pair_matching: %s: %d (%s)", reason, count, detail)
    elif not dropped:
        logger.info("pair_matching: %s: %d (%s)", reason, count, detail)


# ---------------------------------------------------------------------- embeddings
def _as_vector(value: Any) -> np.ndarray | None:
    """One embedding cell → 1-D float array; a cell holding several vectors (e.g. one per
    picture) gives its first; None for a missing cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    arr = np.asarray(value)
    if arr.dtype == object:
        if arr.size == 0:
            return None
        first = arr.ravel()[0]
        arr = np.asarray(
            first if isinstance(first, list | np.ndarray) else list(arr.ravel()), dtype=np.float32
        )
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[0]
    return arr.ravel() if arr.size else None


def vectors_from_column(
    table: pd.DataFrame, id_column: str, column: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse an embedding column that holds arrays into ``(ids [N], float32 [N, D], n_bad)``.

    Rows with a missing vector or any NaN/inf are excluded (``n_bad`` counts them).

    Raises:
        KeyError: ``id_column`` or ``column`` is absent.
        ValueError: vectors of different lengths (the lengths found and example ids).
    """
    for col in (id_column, column):
        if col not in table.columns:
            raise KeyError(f"Column {col!r} is not in the table; columns: {list(table.columns)}")
    ids, vecs, bad = [], [], 0
    for item_id, value in zip(table[id_column].astype(str), table[column], strict=True):
        vec = _as_vector(value)
        if vec is None or not np.isfinite(vec).all():
            bad += 1
            continue
        ids.append(item_id)
        vecs.append(vec)
    lengths = pd.Series([len(v) for v in vecs], index=ids, dtype="int64")
    if lengths.nunique() > 1:
        common = int(lengths.mode().iloc[0])
        odd = lengths[lengths != common]
        raise ValueError(
            f"Embedding column {column!r} mixes dimensions {sorted(lengths.unique().tolist())}: "
            f"{len(odd)} items differ from the usual {common} (e.g. {dict(odd.head(5))})"
        )
    dim = int(lengths.iloc[0]) if len(lengths) else 0
    matrix = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    return np.asarray(ids, dtype=str), matrix, bad


def text_embeddings_lsa(
    items: pd.DataFrame,
    fields: list[str],
    fit_ids: np.ndarray | None = None,
    n_components: int = 128,
    seed: int = 42,
) -> Embeddings:
    """Text embeddings learnt offline: TF-IDF (word 1-2-grams + character 3-5-grams) → LSA.

    For text-only sources (ER-Magellan) that come without embeddings and where no
    pretrained model can be downloaded. The vocabulary and the SVD are fitted on the
    items of ``fit_ids`` (the training items), then applied to all items.

    Args:
        items: ``item_id`` and the ``fields`` columns.
        fields: text columns joined into one document per item.
        fit_ids: ids the TF-IDF and SVD are fitted on (default: all items).
        n_components: embedding dimension (capped by the vocabulary size - 1).
        seed: SVD seed.

    Returns:
        :class:`Embeddings` with ``text [N, n_components]`` (L2-normalised) and an empty
        ``image [N, 0]``.
    """
    from scipy.sparse import hstack

    docs = items[fields].astype("string").fillna("").agg(" ".join, axis=1).str.lower().tolist()
    fit_mask = (
        np.ones(len(items), bool)
        if fit_ids is None
        else items["item_id"].isin(set(map(str, fit_ids))).to_numpy()
    )
    fit_docs = [d for d, m in zip(docs, fit_mask, strict=True) if m]
    word = TfidfVectorizer(
        token_pattern=r"(?u)\w+", ngram_range=(1, 2), sublinear_tf=True, min_df=1
    ).fit(fit_docs)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2).fit(
        fit_docs
    )
    x = hstack([word.transform(docs), char.transform(docs)]).tocsr()
    k = max(1, min(n_components, x.shape[1] - 1, int(fit_mask.sum()) - 1))
    svd = TruncatedSVD(n_components=k, random_state=seed).fit(x[fit_mask])
    text = l2_normalise(svd.transform(x))
    return Embeddings(
        ids=items["item_id"].astype(str).to_numpy(),
        text=text,
        image=np.zeros((len(items), 0), np.float32),
    )


# ---------------------------------------------------------------------- pairs
def clean_pairs(
    pairs: pd.DataFrame,
    known_ids: np.ndarray,
    excluded_ids: np.ndarray | None = None,
    columns: tuple[str, str, str] = ("left_id", "right_id", "label"),
    report: list[dict[str, Any]] | None = None,
    drop_duplicates: bool = True,
) -> pd.DataFrame:
    """Validate a pairs table and return ``left_id, right_id, label[, split]``.

    Args:
        pairs: the source table.
        known_ids: ids that have an item and an embedding.
        excluded_ids: ids that exist but were excluded (NaN embeddings): their pairs are
            dropped and counted rather than failing.
        columns: source names of the left id, right id and label columns.
        report: list the counts are appended to.
        drop_duplicates: drop repeated pairs (either order; the first is kept). A benchmark
            with fixed splits keeps them (counted) so its test set stays the published one.

    Raises:
        KeyError: a column is missing.
        ValueError: ids neither known nor excluded (count and examples); labels other
            than 0/1.
    """
    report = report if report is not None else []
    missing = [c for c in columns if c not in pairs.columns]
    if missing:
        raise KeyError(f"The pairs table lacks columns {missing}; columns: {list(pairs.columns)}")
    left, right, label = columns
    keep = [left, right, label] + (["split"] if "split" in pairs.columns else [])
    df = pairs[keep].rename(columns={left: "left_id", right: "right_id", label: "label"}).copy()
    df["left_id"], df["right_id"] = df["left_id"].astype(str), df["right_id"].astype(str)
    if df["label"].isna().any():
        raise ValueError(f"{int(df['label'].isna().sum())} pairs have no label")
    labels = set(pd.unique(df["label"]).tolist())
    if not labels <= {0, 1}:
        raise ValueError(f"Pair labels must be 0/1, got {sorted(map(str, labels))[:10]}")
    df["label"] = df["label"].astype(np.int64)
    known = set(map(str, known_ids))
    excluded = set(map(str, excluded_ids)) if excluded_ids is not None else set()
    ends = pd.unique(pd.concat([df["left_id"], df["right_id"]]))
    unknown = [i for i in ends if i not in known and i not in excluded]
    if unknown:
        raise ValueError(
            f"{len(unknown)} ids in the pairs table have no item or embedding "
            f"(e.g. {unknown[:5]}); {len(known)} items are known"
        )
    if excluded:
        hit = df["left_id"].isin(excluded) | df["right_id"].isin(excluded)
        _note(
            report, "pairs_with_excluded_item", int(hit.sum()), "a side's embedding had NaN values"
        )
        df = df[~hit]
    self_pair = df["left_id"] == df["right_id"]
    _note(report, "self_pairs", int(self_pair.sum()), "left and right are the same item")
    df = df[~self_pair]
    lo = np.minimum(df["left_id"].to_numpy(), df["right_id"].to_numpy())
    hi = np.maximum(df["left_id"].to_numpy(), df["right_id"].to_numpy())
    key = pd.Series(lo, index=df.index) + "\x1f" + pd.Series(hi, index=df.index)
    dup = key.duplicated(keep="first")
    conflicts = int((df.groupby(key.to_numpy())["label"].nunique() > 1).sum())
    if drop_duplicates:
        _note(
            report,
            "duplicate_pairs",
            int(dup.sum()),
            f"same two items again (either order), first kept; {conflicts} with conflicting labels",
        )
        df = df[~dup]
    else:
        _note(
            report,
            "duplicate_pairs_kept",
            int(dup.sum()),
            f"kept: the source's fixed splits are used as published; {conflicts} with conflicting labels",
            dropped=False,
        )
    return df.reset_index(drop=True)


def _pair_components(pairs: pd.DataFrame) -> np.ndarray:
    """Connected component of each pair in the graph items → pairs (``int [P]``)."""
    ids = pd.Index(pd.unique(pd.concat([pairs["left_id"], pairs["right_id"]])))
    a, b = ids.get_indexer(pairs["left_id"]), ids.get_indexer(pairs["right_id"])
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(ids), len(ids)))
    _, labels = connected_components(graph, directed=False)
    return labels[a]


def split_pairs(
    pairs: pd.DataFrame,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 42,
    report: list[dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Train/validation/test split of pairs with no item on two sides.

    Pairs are grouped by the connected components of the item graph (two pairs sharing
    an item share a component), components are shuffled (seeded) and dealt to test until
    ``test_size`` of the pairs, then to validation until ``val_size`` of the rest (the
    seed system's 80/20, validation carved from train). Components larger than half a
    split's budget go to train. When that leaves the test split under half its target
    (one giant component), items are instead assigned to splits at random in those
    proportions and pairs whose two items landed in different splits are dropped and
    counted (``cross_split_pairs``).

    Returns:
        ``pairs`` with a ``split`` column (``train``/``val``/``test``).
    """
    report = report if report is not None else []
    rng = np.random.default_rng(seed)
    n = len(pairs)
    comp = _pair_components(pairs)
    sizes = np.bincount(comp)
    test_target = test_size * n
    val_target = val_size * (n - test_target)
    assign = np.full(len(sizes), "train", dtype=object)
    counts = {"test": 0.0, "val": 0.0}
    for c in rng.permutation(len(sizes)):
        for split, target in (("test", test_target), ("val", val_target)):
            if counts[split] < target and sizes[c] <= max(1.0, 0.5 * target):
                assign[c] = split
                counts[split] += sizes[c]
                break
    if counts["test"] >= 0.5 * test_target and (
        val_target < 1 or counts["val"] >= 0.5 * val_target
    ):
        out = pairs.assign(split=assign[comp])
        _note(report, "cross_split_pairs", 0, "split by connected components of the pair graph")
    else:
        ids = pd.unique(pd.concat([pairs["left_id"], pairs["right_id"]]))
        p = [(1 - test_size) * (1 - val_size), (1 - test_size) * val_size, test_size]
        item_split = pd.Series(
            rng.choice(np.array(SPLITS, dtype=object), size=len(ids), p=p), index=ids
        )
        ls = item_split.loc[pairs["left_id"]].to_numpy()
        rs = item_split.loc[pairs["right_id"]].to_numpy()
        same = ls == rs
        _note(
            report,
            "cross_split_pairs",
            int((~same).sum()),
            f"the largest component holds {sizes.max()} of {n} pairs: items split at random, "
            "pairs across splits dropped",
        )
        out = pairs[same].assign(split=ls[same])
    return out.reset_index(drop=True)


def _report_split_sizes(pairs: pd.DataFrame, report: list[dict[str, Any]]) -> None:
    for split in SPLITS:
        part = pairs[pairs["split"] == split]
        _note(
            report,
            f"pairs_{split}",
            len(part),
            f"{int(part['label'].sum())} positive",
            dropped=False,
        )
        if len(part) and part["label"].nunique() < 2:
            logger.warning(
                "pair_matching: the %s split holds one class only (%d pairs)", split, len(part)
            )


# ---------------------------------------------------------------------- layout 1
def competition_pair_data(
    text_items: pd.DataFrame, image_items: pd.DataFrame, pairs: pd.DataFrame, params: dict[str, Any]
) -> PairData:
    """Layout 1: the seed competition's parquet tables.

    Args:
        text_items: one row per item: id, text embedding (array column), text columns.
        image_items: one row per item: id, image embedding (array column; a cell holding
            several vectors, one per picture, contributes its first).
        pairs: ``variantid1, variantid2, target`` (names configurable).
        params: ``competition`` block: ``id``, ``text_embedding``, ``image_embedding``,
            ``text_fields``, ``pairs: {left, right, label}``.

    Raises:
        ValueError: embedding dimensions differ between items; pairs name unknown ids.
    """
    cfg = params
    report: list[dict[str, Any]] = []
    tid, text, bad_t = vectors_from_column(text_items, cfg["id"], cfg["text_embedding"])
    iid, image, bad_i = vectors_from_column(image_items, cfg["id"], cfg["image_embedding"])
    _note(
        report, "nan_text_embeddings", bad_t, "text embedding missing or not finite: item excluded"
    )
    _note(
        report,
        "nan_image_embeddings",
        bad_i,
        "image embedding missing or not finite: item excluded",
    )
    t_index, i_index = pd.Index(tid), pd.Index(iid)
    both = t_index.intersection(i_index, sort=False)
    all_ids = set(text_items[cfg["id"]].astype(str)) | set(image_items[cfg["id"]].astype(str))
    _note(
        report,
        "items_without_both_embeddings",
        len(all_ids - set(both)),
        "in one table only, or excluded for a NaN embedding",
    )
    emb = Embeddings(
        ids=np.asarray(both),
        text=text[t_index.get_indexer(both)],
        image=image[i_index.get_indexer(both)],
    )
    fields = [f for f in cfg.get("text_fields") or [] if f in text_items.columns]
    items = (
        text_items.assign(item_id=text_items[cfg["id"]].astype(str))
        .drop_duplicates("item_id")
        .set_index("item_id")
        .reindex(both)[fields]
        .rename_axis("item_id")
        .reset_index()
    )
    excluded = np.asarray(sorted(all_ids - set(both)))
    cols = cfg.get("pairs", {})
    clean = clean_pairs(
        pairs,
        emb.ids,
        excluded,
        columns=(
            cols.get("left", "variantid1"),
            cols.get("right", "variantid2"),
            cols.get("label", "target"),
        ),
        report=report,
    )
    return PairData(items=items, embeddings=emb, pairs=clean, report=report)


# ---------------------------------------------------------------------- layout 2
def products_pair_data(
    products: pd.DataFrame, embeddings: Embeddings, pairs: pd.DataFrame, params: dict[str, Any]
) -> PairData:
    """Layout 2: Vitrina products + an embeddings NPZ + ``left_id, right_id, label``.

    Products without an embedding (no processed image) are left out; pairs naming them
    raise like any unknown id, since the NPZ is expected to cover the pairs.

    Args:
        params: ``pairs`` block: ``left``, ``right``, ``label`` column names.
    """
    report: list[dict[str, Any]] = []
    # Embeddings are finite by construction (vitrina.datasets.embeddings.Embeddings)
    items = products.assign(item_id=products["product_id"].astype(str))
    items = items[items["item_id"].isin(set(embeddings.ids))]
    emb = embeddings.align(items["item_id"])
    cols = params.get("pairs", {})
    clean = clean_pairs(
        pairs,
        emb.ids,
        None,
        columns=(
            cols.get("left", "left_id"),
            cols.get("right", "right_id"),
            cols.get("label", "label"),
        ),
        report=report,
    )
    return PairData(
        items=items.drop(columns=["product_id"]).reset_index(drop=True).pipe(_id_first),
        embeddings=emb,
        pairs=clean,
        report=report,
    )


def _id_first(items: pd.DataFrame) -> pd.DataFrame:
    return items[["item_id", *[c for c in items.columns if c != "item_id"]]]


# ---------------------------------------------------------------------- layout 3
def er_magellan_pair_data(data: ErMagellanData, params: dict[str, Any]) -> PairData:
    """Layout 3: an ER-Magellan dataset with its own splits; text embeddings learnt by
    :func:`text_embeddings_lsa` on the training items.

    Args:
        data: the dataset (:func:`vitrina.datasets.er_magellan.read_er_magellan`).
        params: ``lsa``: ``n_components`` and ``exclude_fields`` (attributes left out of
            the embedded text, e.g. ``[price]``); ``seed``.
    """
    report: list[dict[str, Any]] = []
    pairs = clean_pairs(
        data.pairs, data.items["item_id"].to_numpy(), report=report, drop_duplicates=False
    )
    train = pairs[pairs["split"] == "train"]
    fit_ids = pd.unique(pd.concat([train["left_id"], train["right_id"]]))
    lsa = params.get("lsa") or {}
    exclude = set(lsa.get("exclude_fields") or [])
    fields = [a for a in data.attributes if a not in exclude] or data.attributes
    emb = text_embeddings_lsa(
        data.items,
        fields,
        fit_ids,
        n_components=int(lsa.get("n_components", 128)),
        seed=int(params.get("seed", 42)),
    )
    return PairData(items=data.items, embeddings=emb, pairs=pairs, report=report)


# ---------------------------------------------------------------------- layout 4
def split_items_by_group(
    item_ids: np.ndarray,
    groups: np.ndarray,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 42,
) -> np.ndarray:
    """``train``/``val``/``test`` per item, whole groups on one side (``GroupShuffleSplit``:
    test takes ``test_size`` of the groups, validation ``val_size`` of the rest)."""
    n = len(item_ids)
    split = np.full(n, "train", dtype=object)
    idx = np.arange(n)
    if len(np.unique(groups)) < 3:
        raise ValueError(
            f"A grouped train/validation/test split needs >= 3 groups, got {len(np.unique(groups))}"
        )
    rest, test = next(
        GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(
            idx, groups=groups
        )
    )
    split[test] = "test"
    if val_size > 0:
        tr, va = next(
            GroupShuffleSplit(n_splits=1, test_size=val_size, random_state=seed + 1).split(
                rest, groups=groups[rest]
            )
        )
        split[rest[va]] = "val"
    return split


def mining_vectors(embeddings: Embeddings, modality: str) -> np.ndarray:
    """Vectors for neighbour search: one modality, or ``text+image`` with each modality
    L2-normalised first so both weigh the same (``[N, Dt + Di]``)."""
    if modality == "text+image":
        parts = [m for m in (embeddings.text, embeddings.image) if m.shape[1]]
        return np.concatenate([l2_normalise(p) for p in parts], axis=1)
    return embeddings.modality(modality)


def catalogue_pairs(
    items: pd.DataFrame, embeddings: Embeddings, split: np.ndarray, params: dict[str, Any]
) -> pd.DataFrame:
    """Layout 4 pairs within each split: same ``group_id`` → 1; nearest other group → 0.

    Args:
        items: ``item_id, group_id`` aligned with ``embeddings`` and ``split``.
        embeddings: the items' embeddings.
        split: ``[N]`` split per item.
        params: ``catalogue`` block: ``max_positives_per_group`` (all pairs of a group when
            it has fewer), ``hard_negatives_per_item``, ``hard_negative_pool`` (neighbours
            searched), ``random_negatives_per_item``, ``mining_modality``, ``seed``,
            ``threads`` (FAISS).

    Returns:
        ``left_id, right_id, label, split`` (unordered pairs, each once).
    """
    rng = np.random.default_rng(int(params.get("seed", 42)))
    max_pos = int(params.get("max_positives_per_group", 50))
    n_hard = int(params.get("hard_negatives_per_item", 3))
    pool = int(params.get("hard_negative_pool", 10))
    n_rand = int(params.get("random_negatives_per_item", 1))
    vectors = mining_vectors(embeddings, params.get("mining_modality", "text+image"))
    ids = items["item_id"].astype(str).to_numpy()
    groups = items["group_id"].astype(str).to_numpy()
    rows: list[tuple[str, str, int, str]] = []
    for s in SPLITS:
        idx = np.flatnonzero(split == s)
        if len(idx) < 2:
            continue
        g = groups[idx]
        for _, members in pd.Series(np.arange(len(idx))).groupby(g):
            m = members.to_numpy()
            if len(m) < 2:
                continue
            combos = list(itertools.combinations(m, 2))
            if len(combos) > max_pos:
                combos = [combos[i] for i in rng.choice(len(combos), size=max_pos, replace=False)]
            rows += [(ids[idx[a]], ids[idx[b]], 1, s) for a, b in combos]
        if n_hard:
            index = CandidateIndex(
                {
                    "kind": "auto",
                    "seed": int(params.get("seed", 42)),
                    "threads": params.get("threads"),
                }
            ).build(vectors[idx])
            _, nn = index.search(vectors[idx], min(pool + 1, len(idx)))
            for a in range(len(idx)):
                taken = 0
                for b in nn[a]:
                    if b < 0 or b == a or g[b] == g[a]:
                        continue
                    rows.append((ids[idx[a]], ids[idx[b]], 0, s))
                    taken += 1
                    if taken == n_hard:
                        break
        for _ in range(n_rand):
            partner = rng.integers(0, len(idx), size=len(idx))
            ok = g[partner] != g
            rows += [
                (ids[idx[a]], ids[idx[b]], 0, s)
                for a, b in zip(np.flatnonzero(ok), partner[ok], strict=True)
            ]
    df = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    lo = np.minimum(df["left_id"].to_numpy(), df["right_id"].to_numpy())
    hi = np.maximum(df["left_id"].to_numpy(), df["right_id"].to_numpy())
    df = (
        df.assign(left_id=lo, right_id=hi)
        .drop_duplicates(["left_id", "right_id"])
        .reset_index(drop=True)
    )
    return df


def catalogue_pair_data(
    products: pd.DataFrame, embeddings: Embeddings, params: dict[str, Any]
) -> PairData:
    """Layout 4: items = products with an embedding; grouped split; pairs built per split.

    Args:
        products: canonical products (``product_id``, ``group_id``, text columns).
        embeddings: one model's embeddings.
        params: ``pair_matching`` parameters (``catalogue``, ``test_size``, ``val_size``,
            ``seed``).

    Raises:
        KeyError: ``group_id`` is not a products column.
        ValueError: fewer than three groups.
    """
    report: list[dict[str, Any]] = []
    if "group_id" not in products.columns:
        raise KeyError(
            "Catalogue pairs need a 'group_id' products column (see the canonical schema)"
        )
    have = set(embeddings.ids)  # finite by construction (Embeddings)
    items = products.assign(item_id=products["product_id"].astype(str))
    items = (
        items[items["item_id"].isin(have)]
        .drop(columns=["product_id"])
        .reset_index(drop=True)
        .pipe(_id_first)
    )
    items["group_id"] = items["group_id"].astype("string").fillna(items["item_id"])
    _note(
        report,
        "products_without_embedding",
        len(products) - len(items),
        "no processed image or not embedded",
    )
    emb = embeddings.align(items["item_id"])
    seed = int(params.get("seed", 42))
    split = split_items_by_group(
        items["item_id"].to_numpy(),
        items["group_id"].astype(str).to_numpy(),
        float(params.get("test_size", 0.2)),
        float(params.get("val_size", 0.1)),
        seed,
    )
    mining = {"seed": seed, "threads": params.get("threads"), **(params.get("catalogue") or {})}
    pairs = catalogue_pairs(items, emb, split, mining)
    return PairData(items=items, embeddings=emb, pairs=pairs, report=report)


def finalise(data: PairData, params: dict[str, Any]) -> PairData:
    """Split the pairs when the source has no split; count items, pairs, positives."""
    report = data.report
    pairs = data.pairs
    if "split" not in pairs.columns:
        pairs = split_pairs(
            pairs,
            float(params.get("test_size", 0.2)),
            float(params.get("val_size", 0.1)),
            int(params.get("seed", 42)),
            report,
        )
    bad = set(pairs["split"].unique()) - set(SPLITS)
    if bad:
        raise ValueError(f"Unknown split values {sorted(bad)}; expected {list(SPLITS)}")
    _note(
        report,
        "items",
        len(data.items),
        f"text {data.embeddings.text.shape[1]}-d, image {data.embeddings.image.shape[1]}-d",
        dropped=False,
    )
    _note(report, "pairs", len(pairs), f"{int(pairs['label'].sum())} positive", dropped=False)
    _report_split_sizes(pairs, report)
    return PairData(
        items=data.items, embeddings=data.embeddings, pairs=pairs[PAIR_COLUMNS], report=report
    )
