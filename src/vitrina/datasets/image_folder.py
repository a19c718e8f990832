"""A folder of images as a Kedro dataset (lineage and thumbnails in kedro-viz)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import ImagePreview
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class ImageFolderDataset(AbstractDataset[Path, list[Path]]):
    """Images under a directory, written by a node that streams them to disk.

    Image processing writes thousands of files in parallel, atomically and resumably, so
    its node writes them itself and returns the folder it filled; ``save(folder)`` checks
    that folder lies inside ``path`` and holds images (nothing is copied). ``load()``
    returns the sorted image paths; ``preview()`` a contact sheet of the first images.

    Raises:
        DatasetError: on save, a folder outside ``path`` or without images; on load, a
            missing ``path``.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def _images(self) -> list[Path]:
        return sorted(p for p in self._path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)

    def load(self) -> list[Path]:
        if not self._path.is_dir():
            raise DatasetError(
                f"Image folder '{self._path}' does not exist: run `kedro run --pipeline=image_processing` first"
            )
        return self._images()

    def save(self, data: Path) -> None:
        folder = Path(data).resolve()
        if not folder.is_relative_to(self._path.resolve()):
            raise DatasetError(
                f"ImageFolderDataset at '{self._path}' was given folder '{folder}', which lies outside it"
            )
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
            raise DatasetError(f"Image folder '{folder}' holds no image")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def preview(self, n: int = 16, side: int = 96) -> ImagePreview:
        """A PNG contact sheet (base64) of the first ``n`` images, ``side`` px thumbnails."""
        images = self._images()[:n] if self._path.is_dir() else []
        cols = 8
        rows = max(1, -(-len(images) // cols))
        sheet = Image.new("RGB", (cols * side, rows * side), "white")
        for i, path in enumerate(images):
            with Image.open(path) as img:
                img.thumbnail((side, side))
                sheet.paste(img.convert("RGB"), ((i % cols) * side, (i // cols) * side))
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        return ImagePreview(base64.b64encode(buffer.getvalue()).decode())
