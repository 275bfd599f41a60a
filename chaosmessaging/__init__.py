"""chaosmessaging: a Chaos Toolkit extension for real-time messaging platforms."""

import importlib
import pkgutil

from chaoslib.discovery import discover_actions, discover_probes, initialize_discovery_result
from chaoslib.types import DiscoveredActivities, Discovery
from logzero import logger

__version__ = "0.1.0"
__all__ = ["__version__", "discover", "load_exported_activities"]

# subpackage -> chaoslib function that reads its modules' activities
_ACTIVITY_PACKAGES = {
    "chaosmessaging.actions": discover_actions,
    "chaosmessaging.probes": discover_probes,
}


def discover(discover_system: bool = True) -> Discovery:
    """Discover the activities of this extension (`chaos discover chaosmessaging`)."""
    logger.info("Discovering capabilities from chaosmessaging")
    discovery = initialize_discovery_result("chaosmessaging", __version__, "messaging")
    discovery["activities"].extend(load_exported_activities())
    return discovery


def load_exported_activities() -> DiscoveredActivities:
    """Every activity in `__all__` of every public module under `actions` and `probes`.

    The module list is read from the packages themselves (pkgutil), so a new module is
    discovered without being registered here; `_private` modules hold helpers and are skipped.
    """
    activities: DiscoveredActivities = []
    for package_name, discover_in in _ACTIVITY_PACKAGES.items():
        for module_name in _public_modules(package_name):
            activities.extend(discover_in(module_name))
    return activities


def _public_modules(package_name: str) -> list[str]:
    try:
        package = importlib.import_module(package_name)
    except ImportError as error:
        logger.warning(f"cannot import {package_name}: {error}")
        return []
    return sorted(info.name for info in pkgutil.walk_packages(package.__path__,
                                                               f"{package_name}.")
                  if not any(part.startswith("_") for part in info.name.split(".")))
