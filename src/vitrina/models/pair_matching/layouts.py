"""The pair-matching input layouts, each turned into :class:`.pairs.PairData`.

Layouts (``pair_matching.source``):

1. ``competition`` — the seed system's parquet layout: an items table with text
   embeddings (and text), an items table with image embeddings, and a pairs table
   (``variantid1, variantid2, target``); embedding columns hold arrays.
2. ``pairs`` — Vitrina products + an embeddings NPZ + a pairs table
   (``left_id, right_id, label``).
3. ``er_magellan`` — the DeepMatcher/Magellan benchmark in Ditto's format, with its own
   train/valid/test splits (read by :mod:`vitrina.datasets.er_magellan`).
4. ``catalogue`` — pairs built from a catalogue: products sharing ``group_id`` (H&M
   ``product_code``: colour variants) are matches; the hard negatives are each product's
   nearest neighbours with another ``group_id``.

Items of the competition layout whose embedding has NaN are excluded and counted (and so
are their pairs; Vitrina's own NPZ embeddings are finite by construction); embeddings of
different dimensions raise.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from vitrina.embeddings import Embeddings
from vitrina.models.embedders import l2_normalise

from .candidates import CandidateIndex
from .item_embeddings import text_embeddings_lsa, vectors_from_column
from .pairs import PAIR_COLUMNS, SPLITS, PairData, clean_pairs, note


class BenchmarkData(Protocol):
    """What :func:`er_magellan_pair_data` reads of a benchmark dataset
    (:class:`vitrina.datasets.er_magellan.ErMagellanData`)."""

    items: pd.DataFrame
    pairs: pd.DataFrame
    attributes: list[str]


def _pair_columns(
    names: dict[str, str] | None, defaults: tuple[str, str, str]
) -> tuple[str, str, str]:
    """The source's ``(left, right, label)`` column names: ``names`` over ``defaults``."""
    names = names or {}
    return tuple(names.get(k, d) for k, d in zip(("left", "right", "label"), defaults, strict=True))


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
    note(
        report, "nan_text_embeddings", bad_t, "text embedding missing or not finite: item excluded"
    )
    note(
        report,
        "nan_image_embeddings",
        bad_i,
        "image embedding missing or not finite: item excluded",
    )
    t_index, i_index = pd.Index(tid), pd.Index(iid)
    both = t_index.intersection(i_index, sort=False)
    all_ids = set(text_items[cfg["id"]].astype(str)) | set(image_items[cfg["id"]].astype(str))
    note(
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
    columns = _pair_columns(cfg.get("pairs"), ("variantid1", "variantid2", "target"))
    clean = clean_pairs(pairs, emb.ids, excluded, columns=columns, report=report)
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
    # Embeddings are finite by construction (vitrina.embeddings.Embeddings)
    items = products.assign(item_id=products["product_id"].astype(str))
    items = items[items["item_id"].isin(set(embeddings.ids))]
    emb = embeddings.align(items["item_id"])
    columns = _pair_columns(params.get("pairs"), ("left_id", "right_id", "label"))
    clean = clean_pairs(pairs, emb.ids, None, columns=columns, report=report)
    return PairData(
        items=items.drop(columns=["product_id"]).reset_index(drop=True).pipe(_id_first),
        embeddings=emb,
        pairs=clean,
        report=report,
    )


def _id_first(items: pd.DataFrame) -> pd.DataFrame:
    return items[["item_id", *[c for c in items.columns if c != "item_id"]]]


# ---------------------------------------------------------------------- layout 3
def er_magellan_pair_data(data: BenchmarkData, params: dict[str, Any]) -> PairData:
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


def mining_source(embeddings: Embeddings, modality: str, chunk: int = 100_000):
    """:func:`mining_vectors` as a source :class:`CandidateIndex` reads chunk by chunk.

    One modality is its array as it is (a memmap stays on disk); ``text+image`` is a
    callable yielding ``[<=chunk, Dt + Di]`` pieces, so the concatenation of the whole
    catalogue (``N × (Dt + Di)`` float32) is never built.
    """
    if modality != "text+image":
        return mining_vectors(embeddings, modality)
    parts = [m for m in (embeddings.text, embeddings.image) if m.shape[1]]

    def shards():
        for s in range(0, len(embeddings), chunk):
            yield np.concatenate([l2_normalise(p[s : s + chunk]) for p in parts], axis=1)

    return shards


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
    note(
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
