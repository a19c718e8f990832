"""``DemoCatalogueDataset``: the built-in synthetic catalogue as a read-only Kedro dataset."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

from vitrina.demo import (
    DEMO_COLUMNS,
    IMAGES_DIR,
    TABLE_NAME,
    demo_catalogue_is_complete,
    generate_demo_catalogue,
    read_demo_table,
)
from vitrina.demo.masks import demo_masks_dir, write_demo_masks


class DemoCatalogueDataset(AbstractDataset[None, pd.DataFrame]):
    """Read-only dataset over the generated demo catalogue (see :mod:`vitrina.demo`).

    ``load()`` generates the catalogue into ``path`` on first use (deterministically from
    ``seed``; a later load with the same parameters reuses it) and returns the raw table.
    Images live in ``<path>/images``, named by the ``picture`` column; the true garment
    masks (:mod:`vitrina.demo.masks`) in ``<path>/masks/<picture stem>.png``.

    Example ``catalog.yml`` entry::

        raw_products:
          type: vitrina.datasets.DemoCatalogueDataset
          path: data/01_raw/demo
          n_products: 1000
          seed: 42
    """

    def __init__(  # noqa: PLR0913
        self,
        path: str,
        n_products: int = 1000,
        seed: int = 42,
        image_size: tuple[int, int] | list[int] = (240, 320),
        n_defects: int = 8,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset; nothing is generated until ``load()``.

        Args:
            path: Local directory of the catalogue (``products.csv``, ``images/``,
                ``manifest.json``).
            n_products: Number of product rows.
            seed: Generation seed.
            image_size: ``(width, height)`` of the images in pixels (a YAML list works too).
            n_defects: Number of planted defective rows (0 for a clean catalogue).
            metadata: Free-form metadata (e.g. kedro-viz layer); not used by the dataset.
        """
        self._path = PurePosixPath(Path(path).as_posix())
        self._n_products = int(n_products)
        self._seed = int(seed)
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._n_defects = int(n_defects)
        self.metadata = metadata

    @property
    def image_dir(self) -> Path:
        """Directory that ``picture`` values are relative to."""
        return Path(self._path) / IMAGES_DIR

    @property
    def masks_dir(self) -> Path:
        """Directory of the true garment masks, ``<picture stem>.png`` (written by ``load()``)."""
        return demo_masks_dir(self._path)

    def load(self) -> pd.DataFrame:
        """Generate the catalogue and its true garment masks if needed; return its table.

        Returns:
            DataFrame of ``n_products`` rows with the demo source's own columns
            (``vitrina.demo.DEMO_COLUMNS``); ``sku``, ``model_code`` and the other text
            columns are ``str`` (missing values NaN), ``is_adult`` bool, ``price`` float
            (roubles).
        """
        args = {
            "n_products": self._n_products,
            "seed": self._seed,
            "image_size": self._image_size,
            "n_defects": self._n_defects,
        }
        table = generate_demo_catalogue(Path(self._path), **args)
        write_demo_masks(Path(self._path), **args)
        return table

    def save(self, data: None) -> None:
        """Always raises: the demo catalogue is generated, never written by a pipeline.

        Raises:
            DatasetError: Always.
        """
        raise DatasetError(f"{type(self).__name__} is read-only; it cannot save data.")

    def _exists(self) -> bool:
        return demo_catalogue_is_complete(
            Path(self._path), self._n_products, self._seed, self._image_size, self._n_defects
        )

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._path),
            "n_products": self._n_products,
            "seed": self._seed,
            "image_size": self._image_size,
            "n_defects": self._n_defects,
        }

    def preview(self, nrows: int = 5) -> TablePreview:
        """First ``nrows`` rows for kedro-viz, without generating anything.

        Returns:
            ``DataFrame.to_dict(orient="split")`` (keys ``index``, ``columns``, ``data``),
            as ``kedro_datasets.pandas.CSVDataset.preview`` does; an empty table with the
            demo columns when the catalogue has not been generated yet.
        """
        table = Path(self._path) / TABLE_NAME
        if not table.is_file():
            data = pd.DataFrame(columns=list(DEMO_COLUMNS))
        else:
            data = read_demo_table(table, nrows=nrows)
        return TablePreview(data.to_dict(orient="split"))
