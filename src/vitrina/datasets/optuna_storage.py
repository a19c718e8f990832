"""The Optuna storage URL of the tuning pipeline, from Kedro credentials only."""

from __future__ import annotations

import logging
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from vitrina.tuning import redact

logger = logging.getLogger(__name__)


class OptunaStorageDataset(AbstractDataset[str, str | None]):
    """``load()`` is the study storage URL of credentials ``{"url": ...}`` (or ``None``).

    Kedro hands credentials to datasets, never to nodes; this read-only dataset carries
    the URL of a shared Optuna storage (``postgresql+psycopg://user:password@host/db``,
    any Optuna RDB URL) from ``conf/<env>/credentials.yml`` to the tuning node, so the
    password is in no parameter file, log or MLflow run (its description and every log
    line redact it). An empty or missing URL loads as ``None``: the node then uses
    ``tuning.storage`` (an SQLite file under ``data/`` by default).

    Raises:
        DatasetError: the credentials' ``url`` is not a string; on save (read-only).
    """

    def __init__(
        self, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        url = (credentials or {}).get("url")
        if url is not None and not isinstance(url, str):
            raise DatasetError(
                f"Optuna storage credentials need a 'url' string, got {type(url).__name__}"
            )
        self._url = url or None
        self.metadata = metadata

    def load(self) -> str | None:
        if self._url:
            logger.info("tuning: Optuna storage from credentials: %s", redact(self._url))
        return self._url

    def save(self, data: str) -> None:
        raise DatasetError("OptunaStorageDataset is read-only (its URL comes from credentials)")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"url": redact(self._url) if self._url else None}
