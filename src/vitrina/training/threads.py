"""Thread counts on a shared machine: as many torch threads as there are idle cores.

On a machine whose cores other processes keep busy, threads that wait for busy cores make
every matmul many times slower than a single thread; ``num_threads: auto`` samples how
busy the machine is right now (``/proc/stat``) and uses the cores left idle.
"""

from __future__ import annotations

import os
import time

import torch


def _cpu_times() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all CPUs from ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    return values[3] + values[4], sum(values)


def busy_cores(window: float = 0.3) -> float:
    """How many cores other work keeps busy now: CPU time used over ``window`` seconds
    (``/proc/stat``), in cores; the 1-minute load average where ``/proc`` is missing.

    The load average lags by minutes (a job that just ended still counts), so it would
    leave idle cores unused; a short sample sees the machine as it is.
    """
    cores = os.cpu_count() or 1
    try:
        idle0, total0 = _cpu_times()
        time.sleep(window)
        idle1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        try:
            return float(os.getloadavg()[0])
        except OSError:
            return 0.0
    if total1 <= total0:
        return 0.0
    return cores * (1.0 - (idle1 - idle0) / (total1 - total0))


def auto_threads(num_threads: int | str | None) -> int | None:
    """Torch CPU threads for ``num_threads``: ``None`` (torch's default, unchanged), a
    number, or ``auto``: the cores left idle by other processes (``cpu_count -
    busy_cores()``, rounded, at least 1, at most torch's default). On a shared machine,
    threads that wait for busy cores make every matmul many times slower than a single
    thread. Apply it for a block with :func:`vitrina.utils.limit_threads`.
    """
    if num_threads == "auto":
        cores = os.cpu_count() or 1
        return max(1, min(torch.get_num_threads(), int(cores - busy_cores() + 0.5)))
    return int(num_threads) if num_threads else None
