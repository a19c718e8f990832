"""Captioning the test split and scoring it (corpus SacreBLEU): shared by the captioning
pipeline and its tuning target."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from vitrina.training.threads import auto_threads
from vitrina.utils import limit_threads

from .inference import Captioner, caption_paths
from .splits import split_rows

logger = logging.getLogger(__name__)


def caption_test_split(
    captioner: Captioner, splits: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """Caption every test image with greedy and beam search.

    Decoding settings are the current ``captioning.generation`` parameters (they win over
    the ones saved with the model).

    Args:
        captioner: the trained captioner; moved to ``evaluation.device`` with
            ``evaluation.precision`` weights (``auto``: bf16 where the CPU has bf16
            instructions, as deployed inference runs).
        splits: output of :func:`~.splits.make_captioning_splits`.
        params: ``captioning`` parameters (``evaluation.batch_size``,
            ``evaluation.decodings``, ``evaluation.max_items``, ``evaluation.device``,
            ``evaluation.precision``, ``evaluation.num_threads``).

    Returns:
        ``product_id, reference, <decoding>...`` (one caption column per decoding).

    Raises:
        RuntimeError: a test image cannot be read (processed images should all be).
    """
    settings = params.get("evaluation") or {}
    with limit_threads(auto_threads(settings.get("num_threads"))):  # restored afterwards
        captioner.to(settings.get("device", "auto"), settings.get("precision", "auto"))
        test = split_rows(splits, "test")
        max_items = settings.get("max_items")
        if max_items:
            test = test.iloc[: int(max_items)]
        out = pd.DataFrame({"product_id": test["product_id"], "reference": test["description"]})
        decodings = list(settings.get("decodings", ["greedy", "beam"]))
        start = time.perf_counter()
        rows = caption_paths(  # each image read and preprocessed once for all decodings
            captioner,
            test["processed_path"].tolist(),
            batch_size=int(settings.get("batch_size", 32)),
            decoding=decodings,
            num_workers=int(settings.get("num_workers", 1)),
            **(params.get("generation") or {}),
        )
        failed = [r for r in rows if r["status"] != "ok"]
        if failed:
            raise RuntimeError(
                f"{len(failed)} test images could not be read (e.g. {failed[0]['path']}: "
                f"{failed[0]['error']}); rerun `kedro run --pipeline=image_processing`"
            )
        for decoding in decodings:
            out[decoding] = [r.get("captions", {decoding: r["caption"]})[decoding] for r in rows]
        seconds = time.perf_counter() - start
        logger.info(
            "captioning: %d test images captioned (%s; %s) in %.1f s (%.3f s/image)",
            len(test),
            " + ".join(decodings),
            captioner.precision,
            seconds,
            seconds / max(len(test), 1),
        )

    return out


def corpus_sacrebleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU of ``sacrebleu`` with its default settings (13a tokenisation), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
