"""Writing and reading the demo catalogue on disk: ``products.csv``, ``images/`` and
``manifest.json``, generated atomically and reused when the parameters match
(:func:`generate_demo_catalogue`; layout in :mod:`vitrina.demo`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vitrina.demo.defects import plant_defects
from vitrina.demo.drawing import encode_jpeg, render
from vitrina.demo.text import make_rows
from vitrina.demo.vocabulary import DEMO_COLUMNS, DEMO_STR_COLUMNS
from vitrina.utils import new_temporary

logger = logging.getLogger(__name__)

#: Bump when the generated content changes, so stale catalogues are regenerated.
DEMO_VERSION = 1


MANIFEST_NAME = "manifest.json"
TABLE_NAME = "products.csv"
IMAGES_DIR = "images"


def read_demo_table(path: str | os.PathLike[str], nrows: int | None = None) -> pd.DataFrame:
    """Read a demo ``products.csv`` (or the catalogue directory holding it) with proper dtypes.

    Args:
        path: The catalogue directory or the ``products.csv`` file itself.
        nrows: Read only the first ``nrows`` rows (``None``: all).

    Returns:
        DataFrame with ``DEMO_COLUMNS``: string columns as ``str`` (missing values NaN),
        ``is_adult`` bool, ``price`` float64 (roubles).

    Raises:
        FileNotFoundError: When the table does not exist.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TABLE_NAME
    return pd.read_csv(
        path,
        dtype={**{c: str for c in DEMO_STR_COLUMNS}, "is_adult": bool, "price": "float64"},
        nrows=nrows,
        encoding="utf-8",
        keep_default_na=False,  # a title "NA" or "None" is text; only empty cells are missing
        na_values=[""],
    )


def read_demo_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the parsed ``manifest.json`` of a catalogue directory, or ``None`` if absent/broken."""
    try:
        return json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def demo_catalogue_is_complete(
    out_dir: str | os.PathLike[str],
    n_products: int = 1000,
    seed: int = 42,
    image_size: tuple[int, int] = (240, 320),
    n_defects: int = 8,
) -> bool:
    """Whether ``out_dir`` holds a complete catalogue generated with exactly these parameters."""
    out_dir = Path(out_dir)
    manifest = read_demo_manifest(out_dir)
    if manifest is None:
        return False
    wanted = generation_params(n_products, seed, image_size, n_defects)
    return (
        all(manifest.get(k) == v for k, v in wanted.items())
        and (out_dir / TABLE_NAME).is_file()
        and (out_dir / IMAGES_DIR).is_dir()
    )


def generate_demo_catalogue(
    out_dir: Path,
    n_products: int = 1000,
    seed: int = 42,
    image_size: tuple[int, int] = (240, 320),
    n_defects: int = 8,
) -> pd.DataFrame:
    """Generate (or reuse) the synthetic demo catalogue in ``out_dir`` and return its table.

    Generation is deterministic: the same arguments give a byte-identical ``products.csv``
    and pixel-identical JPEGs. It is atomic: everything is built in a temporary directory
    beside ``out_dir`` (same filesystem) and renamed into place, so ``out_dir`` is either
    absent, the previous catalogue, or complete. If ``out_dir`` already holds a complete
    catalogue with the same parameters (checked through ``manifest.json``), nothing is
    written and the existing table is read and returned. A catalogue with other parameters
    is replaced.

    Args:
        out_dir: Target directory (created, with its parents). Gets ``products.csv``,
            ``images/<picture>`` and ``manifest.json``.
        n_products: Number of rows (>= 1; >= 2 * n_defects + 2 when defects are planted).
        seed: Seed of every random choice (texts, labels, images, defect positions).
        image_size: ``(width, height)`` of every image in pixels (PIL convention), each >= 32.
            The default ``(240, 320)`` gives portrait images.
        n_defects: Number of planted defective rows (see ``DEFECT_KINDS``); 0 for a clean
            catalogue.

    Returns:
        The table as :func:`read_demo_table` reads it: ``n_products`` rows, ``DEMO_COLUMNS``.

    Raises:
        ValueError: On invalid arguments.
        FileExistsError: If ``out_dir`` exists, is not a demo catalogue and is not empty
            (it is never deleted then).
    """
    out_dir = Path(out_dir)
    width, height = _validate(n_products, seed, image_size, n_defects)
    params = generation_params(n_products, seed, (width, height), n_defects)
    if demo_catalogue_is_complete(out_dir, n_products, seed, (width, height), n_defects):
        logger.info("Demo catalogue in %s is up to date; generation skipped.", out_dir)
        return read_demo_table(out_dir)
    _check_replaceable(out_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = new_temporary(out_dir, is_dir=True)  # 0o777 less the umask, not mkdtemp's 0o700
    try:
        _build(tmp, params, width, height)
        _move_into_place(tmp, out_dir, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "Generated demo catalogue (%d products, seed %d) in %s in %.1f s.",
        n_products,
        seed,
        out_dir,
        time.perf_counter() - started,
    )
    return read_demo_table(out_dir)


def generation_params(
    n_products: int, seed: int, image_size: tuple[int, int], n_defects: int
) -> dict[str, Any]:
    """The parameters a catalogue (and its true masks) are recorded with: ``version``,
    ``n_products``, ``seed``, ``image_size`` ``[width, height]`` and ``n_defects``."""
    return {
        "version": DEMO_VERSION,
        "n_products": int(n_products),
        "seed": int(seed),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "n_defects": int(n_defects),
    }


def _validate(n_products: int, seed: int, image_size: Any, n_defects: int) -> tuple[int, int]:
    if (
        isinstance(n_products, bool)
        or not isinstance(n_products, int | np.integer)
        or n_products < 1
    ):
        raise ValueError(f"n_products must be a positive int, got {n_products!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(n_defects, bool) or not isinstance(n_defects, int | np.integer) or n_defects < 0:
        raise ValueError(f"n_defects must be a non-negative int, got {n_defects!r}")
    if n_defects and n_products < 2 * n_defects + 2:
        raise ValueError(
            f"n_products must be >= 2 * n_defects + 2 = {2 * n_defects + 2} to plant "
            f"{n_defects} defects, got {n_products}"
        )
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (width, height), got {image_size!r}") from None
    if width < 32 or height < 32:
        raise ValueError(f"image_size must be at least (32, 32), got {image_size!r}")
    return width, height


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists() or read_demo_manifest(out_dir) is not None:
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if any(p.name != ".gitkeep" for p in out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists, is not empty and holds no demo catalogue ({MANIFEST_NAME}); "
            "refusing to replace it"
        )


def _move_into_place(tmp: Path, out_dir: Path, params: dict[str, Any]) -> None:
    """Rename the finished ``tmp`` onto ``out_dir``, replacing an old/empty ``out_dir``."""
    old: Path | None = None
    if out_dir.exists():
        if (out_dir / ".gitkeep").exists():
            shutil.copy2(out_dir / ".gitkeep", tmp / ".gitkeep")
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "catalogue")
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # Someone else (a parallel run) finished first: keep theirs if it is what we want.
        if not demo_catalogue_is_complete(
            out_dir,
            params["n_products"],
            params["seed"],
            tuple(params["image_size"]),
            params["n_defects"],
        ):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _build(root: Path, params: dict[str, Any], width: int, height: int) -> None:
    n_products, seed, n_defects = params["n_products"], params["seed"], params["n_defects"]
    rows, styles = make_rows(n_products, seed)
    defects = plant_defects(rows, n_defects, seed)
    by_row = {d["row"]: d["kind"] for d in defects}

    images = root / IMAGES_DIR
    images.mkdir()
    for i, style in enumerate(styles):
        kind = by_row.get(i)
        if kind in ("missing_image", "path_traversal"):
            continue
        rng = np.random.default_rng([seed, 7, i])
        data = encode_jpeg(render(style, rng, width, height))
        if kind == "corrupt_image":
            data = data[: max(len(data) // 3, 64)]
        (images / style["file"]).write_bytes(data)

    table = pd.DataFrame(rows, columns=list(DEMO_COLUMNS))
    table.to_csv(
        root / TABLE_NAME, index=False, encoding="utf-8", lineterminator="\n", float_format="%.2f"
    )
    manifest = {
        **params,
        "generator": "vitrina.demo.generate_demo_catalogue",
        "n_rows": len(table),
        "columns": list(DEMO_COLUMNS),
        "image_size_order": "width,height",
        "defects": defects,
    }
    # Written last: its presence marks the catalogue complete.
    (root / MANIFEST_NAME).write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
