"""Seeded epoch batches, every rank's equal share, the image cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.models.clip.helpers import make_checkpoint, make_pairs
from vitrina.models.clip import ClipBundle
from vitrina.models.clip.data import ContrastiveBatches, epoch_batches, pair_data_from_frame


def test_epoch_batches_are_seeded_and_never_leave_a_batch_of_one():
    batches = epoch_batches(9, 4, epoch=0, seed=0)
    assert [len(b) for b in batches] == [4, 5]
    assert sorted(torch.cat(batches).tolist()) == list(range(9))
    a, b = epoch_batches(50, 8, 3, 7), epoch_batches(50, 8, 3, 7)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], epoch_batches(50, 8, 4, 7)[0])  # a new order each epoch
    two = epoch_batches(51, 8, 3, 7, world_size=2)
    assert all(len(x) % 2 == 0 and len(x) >= 2 for x in two)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        epoch_batches(50, 7, 0, 0, world_size=2)
    with pytest.raises(ValueError, match="at least 2 training pairs"):
        epoch_batches(1, 4, 0, 0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_data")
    pairs = make_pairs(root / "images")
    bundle = ClipBundle.load(make_checkpoint(root / "ckpt", pairs["title"].tolist()))
    return bundle, pairs


def test_two_ranks_share_every_global_batch_of_one_rank(data):
    bundle, pairs = data
    d = pair_data_from_frame(bundle, pairs)
    one = list(ContrastiveBatches(d, 8, 5, lambda: (2, 0, 1)))
    rank0 = list(ContrastiveBatches(d, 4, 5, lambda: (2, 0, 2)))
    rank1 = list(ContrastiveBatches(d, 4, 5, lambda: (2, 1, 2)))
    assert len(one) == len(rank0) == len(rank1) == 6
    for whole, a, b in zip(one, rank0, rank1, strict=True):
        assert torch.equal(whole["pixels"], torch.cat([a["pixels"], b["pixels"]]))
        assert torch.equal(whole["image_keys"], torch.cat([a["image_keys"], b["image_keys"]]))


def test_the_cache_and_per_batch_decoding_give_the_same_batches(data):
    bundle, pairs = data
    cached = pair_data_from_frame(bundle, pairs)
    lazy = pair_data_from_frame(bundle, pairs, cache_mb=0, match_duplicates=False)
    assert cached.pixels is not None and lazy.pixels is None
    a = list(ContrastiveBatches(cached, 8, 1, lambda: (0, 0, 1)))
    b = list(ContrastiveBatches(lazy, 8, 1, lambda: (0, 0, 1)))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["pixels"], y["pixels"]) and torch.equal(x["input_ids"], y["input_ids"])
    # titles are shared by the two copies of a combination: keys say so unless switched off
    assert len(np.unique(cached.text_keys)) == 24 and len(np.unique(lazy.text_keys)) == 48
    with pytest.raises(KeyError, match=r"lacks columns \['processed_path'\]"):
        pair_data_from_frame(bundle, pairs.drop(columns="processed_path"))
