"""The ``papermill.engine`` entry point for ``hubforge``, safe to load while papermill imports.

papermill loads every registered engine while its own package is still being
imported, so the entry point cannot name a class that subclasses papermill's:
importing :mod:`hubforge.server_extension.papermill_engine` first would then be
circular. This stand-in resolves the real engine on first use, when papermill
is complete.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HubforgeEngine"]


class HubforgeEngine:
    """Delegates papermill's engine calls to :class:`~.papermill_engine.HubforgeEngine`."""

    @staticmethod
    def _real() -> Any:
        from .papermill_engine import HubforgeEngine as Real

        return Real

    @classmethod
    def execute_notebook(cls, *args: Any, **kwargs: Any) -> Any:
        """Run the notebook with hubforge's kernel preparation."""
        return cls._real().execute_notebook(*args, **kwargs)

    @classmethod
    def nb_kernel_name(cls, *args: Any, **kwargs: Any) -> Any:
        """The kernel name papermill should use for ``nb``."""
        return cls._real().nb_kernel_name(*args, **kwargs)

    @classmethod
    def nb_language(cls, *args: Any, **kwargs: Any) -> Any:
        """The notebook's language."""
        return cls._real().nb_language(*args, **kwargs)
