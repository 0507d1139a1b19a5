"""The marketplace: a catalog of signed bundles (:mod:`.catalog`), the MQTT service that publishes desired state,
serves chunks and tracks devices (:mod:`.service`), and staged rollouts (:mod:`.rollout`). See docs/mqtt.md."""

from .catalog import Catalog, CatalogError, DesiredEntry, DeviceRecord, RolloutRecord, SQLiteCatalog
from .rollout import Rollout, RolloutResult, failure_rate, pick_canaries, publish, should_halt
from .service import Marketplace

__all__ = [
    "Catalog",
    "CatalogError",
    "DesiredEntry",
    "DeviceRecord",
    "Marketplace",
    "Rollout",
    "RolloutRecord",
    "RolloutResult",
    "SQLiteCatalog",
    "failure_rate",
    "pick_canaries",
    "publish",
    "should_halt",
]
