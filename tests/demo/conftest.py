"""The demo catalogues the tests of vitrina.demo share (generated once per session)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitrina.demo import (
    generate_demo_catalogue,
    read_demo_manifest,
)

N = 60
SIZE = (240, 320)


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "catalogue"
    df = generate_demo_catalogue(out, n_products=N, seed=7)
    return out, df


@pytest.fixture(scope="session")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "catalogue"
    df = generate_demo_catalogue(out, n_products=N, seed=7, n_defects=0)
    return out, df


def decode(path):
    """The RGB pixels of an image file (fails on a corrupt one)."""
    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("RGB"))


def planted_defects(out):
    """The defect records of the catalogue in ``out`` (its manifest)."""
    return read_demo_manifest(out)["defects"]
