"""Thread counts on a shared machine (``num_threads: auto``)."""

from __future__ import annotations

import subprocess
import sys
import time

import torch

from vitrina.training import threads as module
from vitrina.utils import limit_threads


def test_auto_threads_use_the_cores_other_work_leaves_idle(monkeypatch):

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        assert module.busy_cores(window=0.5) >= 0.6  # one core kept busy by the spinner
    finally:
        spinner.kill()
        spinner.wait()

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(module.os, "cpu_count", lambda: 4)
        torch.set_num_threads(4)
        monkeypatch.setattr(module, "busy_cores", lambda window=0.3: 2.8)
        assert module.auto_threads("auto") == 1  # 4 - 2.8 → 1
        monkeypatch.setattr(module, "busy_cores", lambda window=0.3: 0.2)
        assert module.auto_threads("auto") == 4
        assert module.auto_threads(2) == 2 and module.auto_threads(None) is None
        assert torch.get_num_threads() == 4  # computing a count sets nothing

        with limit_threads(module.auto_threads(2)):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 4  # restored after the block
    finally:
        torch.set_num_threads(before)
