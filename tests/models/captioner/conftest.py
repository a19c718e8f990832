from __future__ import annotations

import pytest

from vitrina.models.captioner import Captioner, CaptionerConfig, build_captioner

from .fixtures import TINY, descriptions, write_images


@pytest.fixture(scope="module")
def tiny() -> Captioner:
    return build_captioner(
        CaptionerConfig.from_params(TINY, "tiny"), descriptions(), {"max_new_tokens": 8}
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    return write_images(tmp_path_factory.mktemp("images"))
