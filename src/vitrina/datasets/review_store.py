"""The review database as Kedro datasets: the store nodes write to, and an HTTP endpoint."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kedro.io.core import AbstractDataset, DatasetError

from vitrina.store import ReviewStore, redact, resolve_url

logger = logging.getLogger(__name__)


class ReviewStoreDataset(AbstractDataset[None, ReviewStore]):
    """``load()`` opens the review database (migrated to the head revision) as a
    :class:`vitrina.store.ReviewStore`; nodes write to it through its methods.

    The URL comes from Kedro credentials only (``credentials: review_db`` → ``{"url": ...}``;
    ``conf/base/credentials.yml`` reads ``$VITRINA_REVIEW_DB_URL`` and defaults to the
    SQLite file ``data/07_model_output/review.db``). One store is opened per dataset.

    Raises:
        StoreConnectionError: on load, the database cannot be reached (URL named
            without its password).
    """

    def __init__(
        self, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self._url = resolve_url(credentials)
        self._store: ReviewStore | None = None
        self.metadata = metadata

    def load(self) -> ReviewStore:
        if self._store is None:
            self._store = ReviewStore(self._url)
        return self._store

    def save(self, data: None) -> None:
        """Always raises: nodes write rows through the loaded store, not a whole table."""
        raise DatasetError("ReviewStoreDataset is opened, not saved: write through its methods")

    def _describe(self) -> dict[str, Any]:
        return {"url": redact(self._url)}


def redact_http(url: str) -> str:
    """``url`` without user, password and query (tokens travel there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class JSONPostDataset(AbstractDataset[dict, None]):
    """``save(data)`` POSTs ``data`` as JSON to a URL from credentials, when one is set.

    Credentials ``{"url": ..., "token": ...}`` (token optional: sent as
    ``Authorization: Bearer``). Without a URL nothing is sent and a log line says so, so
    the step is optional. Write-only.

    Raises:
        DatasetError: on save, the server is unreachable or answers an error status
            (named without credentials or query).
    """

    def __init__(
        self,
        credentials: dict[str, Any] | None = None,
        timeout: float = 30.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        credentials = credentials or {}
        self._url = credentials.get("url") or None
        self._token = credentials.get("token") or None
        self._timeout = float(timeout)
        self.metadata = metadata

    def save(self, data: dict) -> None:
        import requests

        if not self._url:
            logger.info("No URL configured for %s: nothing posted", type(self).__name__)
            return
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        where = redact_http(self._url)
        try:
            response = requests.post(self._url, json=data, headers=headers, timeout=self._timeout)
        except requests.RequestException as exc:
            raise DatasetError(f"POST to {where} failed: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise DatasetError(
                f"POST to {where} answered {response.status_code}: {response.text[:200]}"
            )
        logger.info("Posted %d bytes to %s (%d)", len(response.request.body or b""), where,
                    response.status_code)  # fmt: skip

    def load(self) -> dict:
        raise DatasetError("JSONPostDataset is write-only")

    def _describe(self) -> dict[str, Any]:
        return {"url": redact_http(self._url) if self._url else None}
