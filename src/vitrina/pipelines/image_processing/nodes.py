"""Image processing nodes: decode, convert to RGB, resize, write in parallel, resumably."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from vitrina.shards import ShardSpec, ShardStore, digest, shard_bounds
from vitrina.utils import atomic_path

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["product_id", "processed_path", "source_width", "source_height", "source_mode"]
REPORT_COLUMNS = ["product_id", "image_path", "reason", "detail"]
SHARD_COLUMNS = [*dict.fromkeys(MANIFEST_COLUMNS + REPORT_COLUMNS)]


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparency (RGBA, LA, palette with a transparent index) is composited onto
    ``background``; CMYK and YCbCr go through PIL's converters; 16/32-bit greyscale
    (``I;16``, ``I``, ``F``) is rescaled to 0-255 by its own min/max, not clipped.
    EXIF orientation is applied first, so phone photos stand upright.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def resize_square(
    image: Image.Image,
    size: int,
    mode: str = "pad",
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Resize an RGB image to ``size × size`` pixels keeping its aspect ratio.

    ``mode="pad"`` fits the whole image and pads with ``background`` (nothing of the
    product is cut); ``mode="crop"`` centre-crops to a square first (CLIP's own
    preprocessing). Resampling is bicubic (PIL), as in CLIP's preprocessing.

    Raises:
        ValueError: unknown ``mode`` or ``size < 1``.
    """
    if size < 1:
        raise ValueError(f"image_processing.size must be a positive number of pixels, got {size}")
    if mode == "pad":
        return ImageOps.pad(
            image, (size, size), method=Image.Resampling.BICUBIC, color=tuple(background)
        )
    if mode == "crop":
        return ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)
    raise ValueError(f"image_processing.mode must be 'pad' or 'crop', got {mode!r}")


def pad_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where ``resize_square(..., mode="pad")`` puts a ``width`` × ``height`` picture.

    Returns:
        ``(x0, y0, x1, y1)`` in the ``size`` × ``size`` output, end exclusive: PIL's
        ``ImageOps.contain`` size and ``ImageOps.pad`` centring, computed without resizing.
    """
    new_w, new_h = size, size
    if width != height:  # PIL compares the ratios width / height and size / size
        if width / height > 1:
            new_h = round(height / width * size)
        else:
            new_w = round(width / height * size)
    x0, y0 = round((size - new_w) * 0.5), round((size - new_h) * 0.5)
    return x0, y0, x0 + new_w, y0 + new_h


def output_name(product_id: str, extension: str) -> str:
    """A file name for ``product_id`` that is safe on any file system.

    Ids made only of ``[A-Za-z0-9._-]`` are kept as they are; others are sanitised and
    suffixed with 8 hex chars of their SHA-1 so two ids never collide.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", product_id)
    if safe != product_id or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(product_id.encode()).hexdigest()[:8]}"
    return f"{safe}.{extension}"


#: Bumped when the processing itself changes (2: JPEG draft decoding), so older outputs
#: are never reused.
PROCESSING_VERSION = 2
_KEYED_NAME = re.compile(r"^(?P<stem>.+)-(?P<key>[0-9a-f]{12})\.[A-Za-z0-9]+$")


def processing_key(params: dict[str, Any]) -> str:
    """12 hex chars of SHA-1 over every setting that changes a processed image: size,
    mode, background, format, quality (and :data:`PROCESSING_VERSION`). The output
    folder is ``<size>_<mode>_<key>``, so other settings never reuse its files."""
    fmt = str(params.get("format", "JPEG")).upper()
    settings = {
        "version": PROCESSING_VERSION,
        "size": int(params["size"]),
        "mode": params["mode"],
        "background": [int(c) for c in params["background"]],
        "format": fmt,
        "quality": int(params.get("quality", 95)) if fmt in ("JPEG", "WEBP") else None,
    }
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _decode(data: bytes, size: int) -> tuple[Image.Image, dict[str, Any]]:
    """Open ``data``; a JPEG larger than needed is decoded at 1/2, 1/4 or 1/8 scale
    (``Image.draft``: the DCT scaling of libjpeg, still at least ``size`` px on both
    sides), so a 10000 x 10000 photo needs ~5 MB, not 300 MB, to make a 224 px square."""
    img = Image.open(io.BytesIO(data))
    source = {"source_width": img.width, "source_height": img.height, "source_mode": img.mode}
    if img.format == "JPEG" and min(img.size) >= 2 * size:
        img.draft(img.mode, (size, size))
    img.load()  # decode now: truncated/corrupt files fail here, not later
    return img, source


def _process_one(src: Path, out_dir: Path, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Process one image into ``out_dir/<name stem>-<content key>.<ext>``; return manifest
    fields (``processed_path`` included) or ``{"error": ...}``. Never raises.

    The content key is 12 hex chars of the source file's SHA-1: a replaced source image
    gets a new output, and an output that exists is complete (written atomically)."""
    try:
        data = src.read_bytes()
        stem, extension = name.rsplit(".", 1)
        dst = out_dir / f"{stem}-{hashlib.sha1(data).hexdigest()[:12]}.{extension}"
        if dst.exists():
            with Image.open(io.BytesIO(data)) as img:  # the header only
                return {
                    "processed_path": dst,
                    "source_width": img.width,
                    "source_height": img.height,
                    "source_mode": img.mode,
                }
        img, source = _decode(data, int(params["size"]))
        with img:
            rgb = to_rgb(img, tuple(params["background"]))
        out = resize_square(rgb, int(params["size"]), params["mode"], tuple(params["background"]))
        with atomic_path(dst) as tmp:
            save_args = (
                {"quality": int(params.get("quality", 95))}
                if params["format"].upper() in ("JPEG", "WEBP")
                else {}
            )
            out.save(tmp, format=params["format"], **save_args)
        return {"processed_path": dst, **source}
    except FileNotFoundError as exc:
        return {"error": "missing_image", "detail": str(exc)}
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        return {"error": "decode_error", "detail": f"{type(exc).__name__}: {exc}"}


def _remove_superseded(out_dir: Path, kept: set[Path], stems: set[str]) -> int:
    """Delete older outputs (other content keys) of the images ``stems`` in ``out_dir``."""
    removed = 0
    for path in out_dir.iterdir():
        match = _KEYED_NAME.match(path.name)
        if match and match["stem"] in stems and path not in kept:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _shard_inputs(jobs: list[tuple[str, str, Path, str]]) -> str:
    """Digest of a shard's products: id, source path and the source file's size and
    modification time (a replaced picture changes its shard's digest)."""
    stats = []
    for _, _, src, _ in jobs:
        try:
            st = src.stat()
            stats.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            stats.append("missing")
    return digest([j[0] for j in jobs], [str(j[2]) for j in jobs], stats)


def _shard_table(jobs: list[tuple[str, str, Path, str]], results: list[dict[str, Any]]) -> pa.Table:
    """One shard's rows: the manifest fields of processed images, reason + detail of failures."""
    frame = pd.DataFrame(
        [
            {
                "product_id": pid,
                "image_path": rel,
                "processed_path": res["processed_path"].as_posix() if "error" not in res else None,
                "source_width": res.get("source_width"),
                "source_height": res.get("source_height"),
                "source_mode": res.get("source_mode"),
                "reason": res.get("error"),
                "detail": res.get("detail"),
            }
            for (pid, rel, _, _), res in zip(jobs, results, strict=True)
        ],
        columns=SHARD_COLUMNS,
    ).astype({"source_width": "Int64", "source_height": "Int64"})
    return pa.Table.from_pandas(frame, preserve_index=False)


def process_images(
    products: pd.DataFrame, image_root: str, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert every product image to RGB, resize it to a square and write it to disk.

    Work goes in shards of ``params["shard_size"]`` products (:mod:`vitrina.shards`: one
    parquet of manifest rows per shard under ``<output folder>.shards/``, with a
    manifest): a rerun skips finished shards whose products, source files (size and
    modification time) and settings are unchanged, and memory holds one shard's results.
    Within a shard, work is spread over ``params["n_workers"]`` threads (PIL releases the
    GIL while decoding and resizing). Every file is written through a temporary name and renamed,
    so an interrupted run leaves no half-written image, and a rerun skips images already
    processed (only their header is read, to fill the manifest). The cache is keyed by
    everything that makes an output: the folder ``<size>_<mode>_<settings key>``
    (:func:`processing_key`: size, mode, background, format, quality) and, per image,
    the file name ``<product id>-<source content key>.<ext>``; a replaced source image is
    processed again and its older output deleted.

    Args:
        products: canonical products (``product_id``, ``image_path`` relative to
            ``image_root``).
        image_root: directory the ``image_path`` values are relative to.
        params: ``image_processing`` parameters: ``size`` (px), ``mode`` (pad|crop),
            ``background`` (RGB 0-255), ``output_dir``, ``format``, ``quality``,
            ``n_workers``, ``shard_size`` (50,000).

    Returns:
        ``image_manifest`` — one row per product whose image was processed:
        ``product_id, processed_path, source_width, source_height, source_mode`` — and
        ``image_quality_report``: ``product_id, image_path, reason, detail`` for every
        image that failed (``decode_error``, ``missing_image``); those products are
        excluded downstream; and the folder the images were written to (the
        ``processed_images`` dataset).

    Raises:
        ValueError: no image at all could be processed (names the first errors), or
            ``shard_size`` is not a positive integer.
    """
    fmt = params.get("format", "JPEG").upper()
    extension = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}.get(fmt, fmt.lower())
    out_dir = Path(params["output_dir"]) / (
        f"{int(params['size'])}_{params['mode']}_{processing_key(params)}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(image_root)
    jobs = [
        (pid, rel, root / rel, output_name(pid, extension))
        for pid, rel in zip(products["product_id"], products["image_path"], strict=True)
    ]
    bounds = shard_bounds(
        len(jobs), params.get("shard_size", 50_000), "image_processing.shard_size"
    )
    store = ShardStore(
        out_dir.with_name(out_dir.name + ".shards"), "images", processing_key(params)
    )
    specs = [ShardSpec(i, a, b, _shard_inputs(jobs[a:b])) for i, (a, b) in enumerate(bounds)]
    pending = set(store.open(specs, settings={k: str(v) for k, v in sorted(params.items())}))
    logger.info("image_processing: %d images → %s", len(jobs), out_dir)
    settings = {**params, "format": fmt}
    kept, stems = set(), set()
    bar = tqdm(total=len(jobs), desc="image_processing", unit="img", disable=None)
    with ThreadPoolExecutor(max_workers=max(1, int(params.get("n_workers", 2)))) as pool:
        for spec in specs:
            shard = jobs[spec.start : spec.stop]
            if spec.index in pending:  # a finished shard is not even read again
                results = []
                for res in pool.map(
                    lambda job: _process_one(job[2], out_dir, job[3], settings), shard
                ):
                    results.append(res)
                    bar.update()
                store.write(spec, _shard_table(shard, results))
                kept |= {res["processed_path"] for res in results if "error" not in res}
                stems |= {job[3].rsplit(".", 1)[0] for job in shard}
            else:
                bar.update(len(shard))
    bar.close()
    store.finish()
    superseded = _remove_superseded(out_dir, kept, stems) if stems else 0
    if superseded:
        logger.info("image_processing: %d outputs of replaced source images removed", superseded)
    rows = pd.concat([t.to_pandas() for t in store.tables()], ignore_index=True)
    ok = rows["reason"].isna()
    manifest = rows.loc[ok, MANIFEST_COLUMNS].astype(
        {"source_width": "int64", "source_height": "int64"}
    )
    failures = rows.loc[~ok, REPORT_COLUMNS].to_dict("records")
    report = pd.DataFrame(failures, columns=REPORT_COLUMNS)
    if failures:
        logger.warning(
            "image_processing: %d of %d images failed and are excluded: %s",
            len(failures),
            len(jobs),
            report["reason"].value_counts().to_dict(),
        )
    if manifest.empty:
        raise ValueError(
            f"No image could be processed ({len(jobs)} tried); first errors: "
            + "; ".join(f"{f['product_id']}: {f['detail']}" for f in failures[:3])
        )
    return manifest.reset_index(drop=True), report, out_dir
