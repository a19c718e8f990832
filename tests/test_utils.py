"""utils: atomic_path permissions and names, stale temporaries of killed writers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from vitrina.utils import atomic_path, remove_stale_temporaries


@pytest.fixture
def umask():
    """Set the process umask for a test, then restore it."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_outputs_get_the_modes_the_umask_allows(tmp_path, umask, mask):
    umask(mask)
    with atomic_path(tmp_path / "a.npz") as tmp:
        tmp.write_bytes(b"x")
    with atomic_path(tmp_path / "model", is_dir=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "a.npz").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "model" / "weights.bin").stat().st_mode) == 0o666 & ~mask


def test_temporary_names_carry_the_writer_and_vanish_on_error(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "t.csv") as tmp:
        assert tmp.name.startswith(f".t.csv.tmp-{os.getpid()}-") and tmp.suffix == ".csv"
        tmp.write_text("partial")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    folder = tmp_path / "data" / "03_primary"
    folder.mkdir(parents=True)
    stale_file = folder / f".products.parquet.tmp-{pid}-0a1b2c3d.parquet"
    stale_dir = folder / f".model.tmp-{pid}-0a1b2c3d"
    live = folder / f".other.parquet.tmp-{os.getpid()}-0a1b2c3d.parquet"
    old_legacy = folder / ".x.npz.tmp-k2j3h4l5.npz"  # mkstemp name of older versions
    new_legacy = folder / ".y.npz.tmp-q9w8e7r6.npz"
    for path in (stale_file, live, old_legacy, new_legacy):
        path.write_bytes(b"partial")
    stale_dir.mkdir()
    (stale_dir / "weights.bin").write_bytes(b"partial")
    an_hour_ago = time.time() - 7200
    os.utime(old_legacy, (an_hour_ago, an_hour_ago))
    keep = folder / "products.parquet"
    keep.write_bytes(b"good")

    removed = remove_stale_temporaries(tmp_path / "data")
    assert sorted(removed) == sorted([stale_file, stale_dir, old_legacy])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [live.name, new_legacy.name, keep.name]
    )
    assert remove_stale_temporaries(tmp_path / "absent") == []
