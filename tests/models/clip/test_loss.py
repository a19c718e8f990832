"""InfoNCE: the formula, duplicate-aware targets, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitrina.models.clip.loss import contrastive_loss, gather_with_grad, match_targets


def test_contrastive_loss_matches_the_formula_on_a_hand_made_batch():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: e1, e2
    txt = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # normalised: e1, (e1 + e2) / sqrt 2
    scale = torch.tensor(math.log(10.0))
    s = 10 * np.array([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])  # image x text

    def ce(logits, target):
        return -(logits[target] - np.log(np.exp(logits).sum()))

    i2t = (ce(s[0], 0) + ce(s[1], 1)) / 2
    t2i = (ce(s[:, 0], 0) + ce(s[:, 1], 1)) / 2
    assert float(contrastive_loss(img, txt, scale)) == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    same = torch.ones(4, 8)  # uninformative features: log B
    assert float(contrastive_loss(same, same, torch.tensor(0.0))) == pytest.approx(math.log(4))
    eye = torch.eye(4)
    assert float(contrastive_loss(eye, eye, torch.tensor(math.log(100.0)))) < 1e-10


def test_a_shared_image_gives_the_soft_target_loss_and_gradients():
    """Pairs 0 and 1 share an image: with keys, the loss spreads their targets evenly,
    and it equals the hard-target loss (identical logit rows) with the same gradients."""
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    txt = torch.tensor([[1.0, 0.3], [1.0, -0.2], [0.1, 1.0]], requires_grad=True)
    img = images[[0, 0, 1]]
    scale = torch.tensor(math.log(20.0))
    keys = torch.tensor([7, 7, 9])
    loss = contrastive_loss(img, txt, scale, image_keys=keys)
    logits = 20 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    target = torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    soft = (
        -(target * logits.log_softmax(1)).sum(1).mean()
        - (target * logits.t().log_softmax(1)).sum(1).mean()
    ) / 2
    hard = contrastive_loss(img, txt, scale)
    assert loss.item() == pytest.approx(soft.item(), rel=1e-6)
    assert hard.item() == pytest.approx(soft.item(), rel=1e-6)
    for a, b in zip(
        torch.autograd.grad(loss, [images, txt], retain_graph=True),
        torch.autograd.grad(soft, [images, txt]),
        strict=True,
    ):
        torch.testing.assert_close(a, b)


def test_keys_spread_the_target_when_duplicate_features_differ():
    """Pairs 0 and 1 carry one title key but (as under dropout) different text features:
    the loss is the cross-entropy against a target spread over both, not the hard one."""
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    txt = torch.tensor([[1.0, 0.9], [0.9, 1.0], [-1.0, 0.1]])
    scale = torch.tensor(math.log(10.0))
    keys = torch.tensor([0, 0, 1])
    target = match_targets(None, keys, 3)
    torch.testing.assert_close(target, torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]]))
    logits = 10 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    soft = (
        -(target * logits.log_softmax(1)).sum(1).mean()
        - (target * logits.t().log_softmax(1)).sum(1).mean()
    ) / 2
    aware = contrastive_loss(img, txt, scale, text_keys=keys)
    assert aware.item() == pytest.approx(soft.item(), rel=1e-6)
    assert aware.item() != pytest.approx(contrastive_loss(img, txt, scale).item(), rel=1e-3)


def test_a_batch_of_one_and_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="a batch of one has no negative"):
        contrastive_loss(torch.ones(1, 4), torch.ones(1, 4), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"must both be \[B, D\]"):
        contrastive_loss(torch.ones(3, 4), torch.ones(3, 5), torch.tensor(1.0))


def test_gather_is_the_identity_outside_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
