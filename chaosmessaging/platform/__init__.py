"""A messaging platform described as data: one platform file (docs/platforms.md).

`load_platform` reads and validates the file a run uses (configuration key ``platform``, env
``CHAOSMESSAGING_PLATFORM``, default the shipped reference platform); `schema` is the format's
reference; `templates` renders an operation into a request and reads values out of a reply.
"""

from chaosmessaging.platform.loader import (
    PLATFORM_ENV,
    PlatformError,
    load_platform,
    platform_path,
    public_document,
    write_resolved,
)
from chaosmessaging.platform.schema import Operation, Platform

__all__ = [
    "PLATFORM_ENV",
    "Operation",
    "Platform",
    "PlatformError",
    "load_platform",
    "platform_path",
    "public_document",
    "write_resolved",
]
