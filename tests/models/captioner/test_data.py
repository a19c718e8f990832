"""Captioning data: seeded length-bucketed batches, pixels decoded once, splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitrina.models.captioner import grouped_split, load_image
from vitrina.models.captioner.data import BucketBatchSampler, CaptionBatches, PixelSource


def test_batches_depend_only_on_seed_and_epoch():
    lengths = np.arange(1000) % 17
    epoch = {"now": 0}
    sampler = BucketBatchSampler(lengths, 8, seed=1, epoch=lambda: epoch["now"])
    first = list(sampler)
    assert first == BucketBatchSampler(lengths, 8, 1, lambda: 0).batches(0)
    assert sorted(i for b in first for i in b) == list(range(1000))
    assert len(first) == len(sampler) == 125
    epoch["now"] = 1  # asked when iteration starts (a resumed run's loader exists first)
    assert list(sampler) == sampler.batches(1) != first
    # bucketing: a batch spans far fewer lengths than a random one
    spread = np.mean([np.ptp(lengths[b]) for b in first])
    plain = BucketBatchSampler(lengths, 8, 1, lambda: 0, bucketing=False).batches(0)
    assert spread < 0.5 * np.mean([np.ptp(lengths[b]) for b in plain])


def test_pixels_are_decoded_once_when_first_needed(tiny, images, monkeypatch):
    source = PixelSource(tiny, images, num_workers=1)
    calls = []
    original = source.preprocess
    monkeypatch.setattr(source, "preprocess", lambda p: calls.append(p) or original(p))
    assert not calls  # nothing decoded before use
    pixels = source.get([2, 0])
    assert pixels.shape == (2, 3, 32, 32) and pixels.dtype == torch.float32
    assert source.pixels.dtype == torch.float16
    source.get([1])
    assert len(calls) == 1  # one batch of three, decoded once
    direct = tiny.pixel_values([load_image(images[2], square=True)])
    torch.testing.assert_close(pixels[:1], direct, atol=2e-3, rtol=0)

    batch = CaptionBatches(tiny, source, [[5, 6, 2], [7, 2]])([1, 0])
    assert batch["index"].tolist() == [1, 0]
    assert batch["labels"].tolist() == [[7, 2, -100], [5, 6, 2]]


def test_grouped_split_keeps_groups_together_and_tracks_fractions():
    groups = pd.Series([f"g{i // 3}" for i in range(300)])
    split = grouped_split(groups, (0.8, 0.1, 0.1), seed=1)
    df = pd.DataFrame({"group": groups, "split": split})
    assert (df.groupby("group")["split"].nunique() == 1).all()
    shares = df["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.03)
    assert shares["test"] == pytest.approx(0.1, abs=0.03)
    tiny = grouped_split(pd.Series(["a", "b", "c"]), (0.8, 0.1, 0.1), seed=0)
    assert sorted(tiny) == ["test", "train", "validation"]
    with pytest.raises(ValueError, match="fractions"):
        grouped_split(groups, (0, 0, 0), seed=0)
