"""ruCLIP image preprocessing (``vitrina.models.ruclip.processing``)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from tests.models.ruclip.common import assert_close
from vitrina.models.ruclip.configuration import RuClipConfig
from vitrina.models.ruclip.processing import make_image_processor


def test_image_processor_crops_the_centre_and_normalises():
    cfg = RuClipConfig(
        embed_dim=8, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
        context_length=77, vocab_size=100, transformer_width=64, transformer_heads=1,
        transformer_layers=1, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5),
    )  # fmt: skip
    proc = make_image_processor(cfg)
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pv = proc(images=[Image.fromarray(arr)], return_tensors="pt")["pixel_values"][0]
    expected = (
        torch.from_numpy(arr).permute(2, 0, 1) / 255.0 - torch.tensor(cfg.mean)[:, None, None]
    ) / torch.tensor(cfg.std)[:, None, None]
    assert_close(pv, expected.float())
    # a 64x32 (w x h) image: the shortest edge already fits, the centre 32 columns are kept
    wide = np.zeros((32, 64, 3), dtype=np.uint8)
    wide[:, :, 2] = 255  # blue borders
    wide[:, 16:48] = (255, 0, 0)  # red centre
    pv = proc(images=[Image.fromarray(wide)], return_tensors="pt")["pixel_values"][0]
    red = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    assert_close(pv, red[:, None, None].expand(3, 32, 32))
