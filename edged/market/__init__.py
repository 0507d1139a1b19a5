"""The marketplace: a catalog of signed bundles and rollouts on SQLite or PostgreSQL (:mod:`.catalog`), the MQTT
service that publishes desired state, serves chunks within bounds and tracks devices (:mod:`.service`,
:mod:`.chunks`), and rollouts that the service runs, persists and resumes (:mod:`.rollout`). See
docs/marketplace.md."""

from ..errors import CatalogError, CatalogUnavailable, RolloutConflict
from .catalog import (
    Catalog,
    DesiredEntry,
    DeviceRecord,
    PostgresCatalog,
    RolloutDevice,
    RolloutPolicy,
    RolloutRecord,
    SQLiteCatalog,
    open_catalog,
)
from .rollout import (
    Rollout,
    RolloutResult,
    RolloutRunner,
    abort,
    create_rollout,
    failure_rate,
    pause,
    pick_canaries,
    publish,
    resume,
    revert,
    should_halt,
)
from .service import Marketplace

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogUnavailable",
    "DesiredEntry",
    "DeviceRecord",
    "Marketplace",
    "PostgresCatalog",
    "Rollout",
    "RolloutConflict",
    "RolloutDevice",
    "RolloutPolicy",
    "RolloutRecord",
    "RolloutResult",
    "RolloutRunner",
    "SQLiteCatalog",
    "abort",
    "create_rollout",
    "failure_rate",
    "open_catalog",
    "pause",
    "pick_canaries",
    "publish",
    "resume",
    "revert",
    "should_halt",
]
