"""One torch/OpenMP thread for every pair-matching test."""

from __future__ import annotations

import pytest

from vitrina.utils import limit_threads


@pytest.fixture(autouse=True)
def one_thread():
    """One torch/OpenMP thread: spinning thread pools make tests slow on busy shared cores."""
    with limit_threads(1):
        yield
