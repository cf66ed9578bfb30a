"""The exceptions hubforge raises.

Every error a person can act on derives from :class:`HubforgeError`; library
errors are translated at the boundary (``raise ConfigError(...) from exc``).
"""

from __future__ import annotations

__all__ = ["ConfigError", "HubforgeError", "LaunchError", "StoreError"]


class HubforgeError(Exception):
    """Base class of every hubforge error; ``str(err)`` is one line for a person."""


class ConfigError(HubforgeError):
    """The platform config is missing, unreadable or invalid.

    The message names the file, the key (as a dotted path) and the problem.
    """


class LaunchError(HubforgeError):
    """A platform process could not be started or did not become ready."""


class StoreError(HubforgeError):
    """A governance store operation failed (database unreachable, bad state)."""
