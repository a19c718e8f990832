"""The review database: images with a review status, their masks, review events.

SQLAlchemy 2 models (:mod:`.schema`), Alembic migrations shipped in the package and run on
open (:mod:`.engine`), and the repository API (:mod:`.repository`). See
``docs/segmentation.md``.
"""

from .engine import (
    DEFAULT_URL,
    URL_ENV_VAR,
    StoreConnectionError,
    create_store_engine,
    current_revision,
    migrate,
    redact,
    resolve_url,
)
from .repository import IMAGE_COLUMNS, MASK_COLUMNS, ReviewStore
from .schema import STATUSES
from .status import StatusChange, approved_image_ids

__all__ = [
    "DEFAULT_URL",
    "IMAGE_COLUMNS",
    "MASK_COLUMNS",
    "STATUSES",
    "URL_ENV_VAR",
    "ReviewStore",
    "StatusChange",
    "StoreConnectionError",
    "approved_image_ids",
    "create_store_engine",
    "current_revision",
    "migrate",
    "redact",
    "resolve_url",
]
