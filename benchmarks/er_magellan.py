"""Vitrina's pair matcher on the DeepMatcher/Magellan benchmark (Ditto's line format).

For every dataset folder under DATA_DIR (those with ``train.txt``, ``valid.txt``,
``test.txt``; default ``../shared/data/er_magellan``) it trains on ``train``, stops early
and picks the F1-optimal threshold on ``valid``, and scores ``test``, with what runs
offline (no pretrained language model):

* item embeddings learnt on the training records: TF-IDF word 1-2-grams + character
  3-5-grams → LSA (:func:`vitrina.models.pair_matching.text_embeddings_lsa`);
* pair features (:class:`vitrina.models.pair_matching.PairFeatureBuilder`): ``|a-b|``,
  ``a*b``, cosine of the LSA vectors; per attribute token Jaccard/containment, IDF-weighted
  overlap, fuzzy ratios; on the whole record word and character TF-IDF cosine,
  model-number overlap, shared numbers; price log-difference;
* the classifiers of the pipeline: the ``PairwiseBinaryClassifier`` MLP, gradient
  boosting, and their ensemble (mean probability); each gets the F1-optimal threshold on
  ``valid``, and the one with the best validation F1 is reported (the others are printed
  beside it, never picked by their test score).

Run from the repository root::

    .venv/bin/python benchmarks/er_magellan.py [DATA_DIR] [--threads 2]

One line per dataset: ``<dataset> test_f1=<percent>`` beside the published figures
(DeepMatcher Hybrid, Mudgal et al. SIGMOD 2018; Ditto, Li et al. VLDB 2021).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "data" / "er_magellan"

#: Published test F1 (percent): (DeepMatcher Hybrid, Ditto).
PUBLISHED = {
    "Textual/Abt-Buy": (62.8, 89.33),
    "Structured/Walmart-Amazon": (66.9, 86.76),
    "Dirty/Walmart-Amazon": (53.8, 85.69),
}

#: Columns compared as numbers rather than text.
NUMERIC = ("price",)

CLASSIFIERS = {
    "mlp": {
        "type": "mlp",
        "model": {"hidden_size": 256, "n_layers": 2, "dropout": 0.3},
        "train": {
            "learning_rate": 1e-3,
            "weight_decay": 1e-4,
            "batch_size": 128,
            "max_epochs": 80,
            "patience": 12,
        },
    },
    "hist_gbdt": {
        "type": "hist_gbdt",
        "params": {
            "learning_rate": 0.05,
            "max_iter": 500,
            "max_leaf_nodes": 15,
            "n_iter_no_change": 40,
        },
    },
    "ensemble": {"type": "ensemble", "members": ["mlp", "hist_gbdt"]},
}


def run_dataset(path: Path, root: Path, seed: int, lsa_dim: int) -> dict:
    """Train and evaluate on one dataset folder; returns the figures of every classifier."""
    import numpy as np

    from vitrina.datasets.er_magellan import read_er_magellan
    from vitrina.models.pair_matching import (
        binary_metrics,
        er_magellan_pair_data,
        fit_pair_matchers,
    )

    start = time.perf_counter()
    name = path.relative_to(root).as_posix()
    data = read_er_magellan(path, name=name)
    numeric = [a for a in data.attributes if a in NUMERIC]
    strings = [a for a in data.attributes if a not in NUMERIC]
    prepared = er_magellan_pair_data(
        data, {"seed": seed, "lsa": {"n_components": lsa_dim, "exclude_fields": numeric}}
    )
    items = prepared.items.set_index("item_id")
    pairs = prepared.pairs
    train, val, test = (pairs[pairs["split"] == s] for s in ("train", "val", "test"))
    features = {
        "modalities": ["text"],
        "string_fields": strings,
        "numeric_fields": numeric,
    }
    matchers, _ = fit_pair_matchers(
        train, val, items, prepared.embeddings, features, CLASSIFIERS, seed=seed
    )
    builder = next(iter(matchers.values())).builder
    x_test = builder.transform(test["left_id"], test["right_id"], items, prepared.embeddings)
    y_test = test["label"].to_numpy()
    out = {"name": name, "n_features": x_test.shape[1], "classifiers": {}}
    for clf, matcher in matchers.items():
        scores = matcher.estimator.predict_proba(x_test)[:, 1]
        m = binary_metrics(y_test, scores, matcher.threshold)
        out["classifiers"][clf] = {"val_f1": matcher.info["val_f1"], **m}
    best = max(
        out["classifiers"], key=lambda c: np.nan_to_num(out["classifiers"][c]["val_f1"], nan=-1)
    )
    out["selected"] = best
    out["seconds"] = time.perf_counter() - start
    out["sizes"] = {
        s: (len(p), int(p["label"].sum()))
        for s, p in (("train", train), ("val", val), ("test", test))
    }
    return out


def report(r: dict, seed: int | None) -> float:
    """Print one dataset's line; returns the selected classifier's test F1 (percent)."""
    sel = r["classifiers"][r["selected"]]
    dm, ditto = PUBLISHED.get(r["name"], (float("nan"), float("nan")))
    others = ", ".join(
        f"{c} {v['f1'] * 100:.2f} (val {v['val_f1'] * 100:.2f})"
        for c, v in r["classifiers"].items()
    )
    tag = "" if seed is None else f" [seed {seed}]"
    print(
        f"{r['name']} test_f1={sel['f1'] * 100:.2f}   published: DeepMatcher Hybrid {dm}, "
        f"Ditto {ditto} | selected {r['selected']} on validation; {others}; "
        f"P {sel['precision'] * 100:.1f} R {sel['recall'] * 100:.1f} PR-AUC {sel['pr_auc'] * 100:.1f}; "
        f"{r['n_features']} features; train/val/test {r['sizes']}; {r['seconds']:.0f} s{tag}",
        flush=True,
    )
    return sel["f1"] * 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", default=str(DEFAULT_DIR))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="repeat with seeds seed, seed+1, ... and add a mean ± std line per dataset",
    )
    parser.add_argument("--lsa-dim", type=int, default=128, help="LSA embedding dimension")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch / OpenMP threads (0: library defaults)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )

    from vitrina.datasets.er_magellan import find_er_magellan
    from vitrina.utils import limit_threads

    root = Path(args.data_dir)
    folders = find_er_magellan(root)
    if not folders:
        print(f"No ER-Magellan dataset (a folder with train.txt) under {root}", file=sys.stderr)
        return 1
    for folder in folders:
        f1s = []
        for seed in range(args.seed, args.seed + max(1, args.seeds)):
            with limit_threads(args.threads or None):
                r = run_dataset(folder, root, seed, args.lsa_dim)
            f1s.append(report(r, seed if args.seeds > 1 else None))
        if args.seeds > 1:
            print(
                f"{r['name']} mean over {len(f1s)} seeds: test_f1={np.mean(f1s):.2f} "
                f"± {np.std(f1s):.2f} (min {min(f1s):.2f}, max {max(f1s):.2f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
