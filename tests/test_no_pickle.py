"""No pickle on load paths: tampered files are refused, and their payload never runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from kedro.io import DatasetError

from tests.conftest import REPO
from tests.models.captioner.fixtures import train_tiny, write_images
from tests.models.pair_matching.toys import SMALL_GBDT, toy, toy_pairs
from vitrina.datasets.pair_matcher import PairMatcherDataset
from vitrina.models.pair_matching import fit_pair_matchers


class Payload:
    """Pickles as a call that writes ``marker``: unpickling it would run that call."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the payload ran"))


def test_no_pickle_loader_in_the_source():
    pattern = re.compile(r"weights_only\s*=\s*False|joblib\.load\(|pickle\.loads?\(")
    hits = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / "src").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []


def test_a_tampered_captioner_checkpoint_is_refused(tmp_path):
    """A ``last.ckpt`` the engine would resume from holds a pickled call: torch's
    weights-only loading refuses it and the payload never runs."""
    import pickle

    images = write_images(tmp_path)
    checkpoints = tmp_path / "run" / "captioning" / "checkpoints"
    checkpoints.mkdir(parents=True)
    marker = tmp_path / "marker"
    torch.save({"epoch": 0, "payload": Payload(marker)}, checkpoints / "last.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train_tiny(images, tmp_path / "run", pretrain_max_epochs=0, max_epochs=1)
    assert not marker.exists(), "torch.load unpickled the payload"


def test_a_tampered_pair_matcher_is_refused(tmp_path):
    import skops.io

    items, emb = toy(n_groups=20)
    pairs = toy_pairs(items)
    matchers, _ = fit_pair_matchers(
        pairs.iloc[::2],
        pairs.iloc[1::2],
        items.set_index("item_id"),
        emb,
        {"modalities": ["text"], "string_fields": ["title"]},
        {"gbdt": SMALL_GBDT},
        seed=0,
    )
    dataset = PairMatcherDataset(str(tmp_path / "matcher"))
    dataset.save(matchers["gbdt"])
    files = sorted(p.name for p in (tmp_path / "matcher").iterdir())
    assert files == ["baseline.skops", "config.json", "features.skops"]
    assert dataset.load().threshold == matchers["gbdt"].threshold  # the real one loads

    for name in ("features.skops", "baseline.skops"):
        marker = tmp_path / f"marker-{name}"
        skops.io.dump({"x": Payload(marker)}, tmp_path / "matcher" / name)
        with pytest.raises(DatasetError, match=r"Untrusted types found.*Payload"):
            dataset.load()
        assert not marker.exists()
        dataset.save(matchers["gbdt"])


def test_a_pickled_matcher_of_an_older_version_is_not_loaded(tmp_path):
    folder = tmp_path / "matcher"
    folder.mkdir()
    (folder / "config.json").write_text('{"kind": "baseline", "threshold": 0.5}')
    (folder / "features.joblib").write_bytes(b"pickle")
    with pytest.raises(DatasetError, match="older Vitrina with pickled .joblib"):
        PairMatcherDataset(str(folder)).load()
