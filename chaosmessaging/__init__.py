"""chaosmessaging: a Chaos Toolkit extension for real-time messaging platforms.

chaoslib is imported only when discovery runs: every `chaosmessaging` command imports this
package first, and it must start fast (a Ctrl-C right after launching must land in the CLI's own
handler, not in an import)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaoslib.types import DiscoveredActivities, Discovery

__version__ = "0.1.0"
__all__ = ["__version__", "discover", "load_exported_activities"]

# subpackage -> name of the chaoslib.discovery function that reads its modules' activities
_ACTIVITY_PACKAGES = {
    "chaosmessaging.actions": "discover_actions",
    "chaosmessaging.probes": "discover_probes",
}


def discover(discover_system: bool = True) -> Discovery:
    """Discover the activities of this extension (`chaos discover chaosmessaging`)."""
    from chaoslib.discovery import initialize_discovery_result
    from logzero import logger

    logger.info("Discovering capabilities from chaosmessaging")
    discovery = initialize_discovery_result("chaosmessaging", __version__, "messaging")
    discovery["activities"].extend(load_exported_activities())
    return discovery


def load_exported_activities() -> DiscoveredActivities:
    """Every activity in `__all__` of every public module under `actions` and `probes`.

    The module list is read from the packages themselves (pkgutil), so a new module is
    discovered without being registered here; `_private` modules hold helpers and are skipped.
    """
    from chaoslib import discovery

    activities: DiscoveredActivities = []
    for package_name, discover_in in _ACTIVITY_PACKAGES.items():
        for module_name in _public_modules(package_name):
            activities.extend(getattr(discovery, discover_in)(module_name))
    return activities


def _public_modules(package_name: str) -> list[str]:
    try:
        package = importlib.import_module(package_name)
    except ImportError as error:
        from logzero import logger

        logger.warning(f"cannot import {package_name}: {error}")
        return []
    return sorted(
        info.name
        for info in pkgutil.walk_packages(package.__path__, f"{package_name}.")
        if not any(part.startswith("_") for part in info.name.split("."))
    )
