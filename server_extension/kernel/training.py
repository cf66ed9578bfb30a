"""A training call as hubforge keeps it until it is logged: pure, no mlflow.

The objects a fit leaves (the fitted estimator, its arguments, its result) are
copied as the call returns (:func:`snapshot`), so that what the person does in
the next cells (refit the estimator in place, change the data) does not change
what is logged.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COPY_LIMIT", "FitJob", "fitted", "now_ms", "requirements_key", "run_name", "snapshot", "weakrefable"]

log = logging.getLogger(__name__)

#: Arguments bigger than this (bytes, together) are shared with the replay, not copied.
COPY_LIMIT = 256 * 1024 * 1024


@dataclass
class FitJob:
    """One training call, trained on the cell, to be logged as a child run."""

    integration: str
    patch_function: Callable[..., Any]
    tags: dict[str, str]
    original: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any
    name: str
    started_ms: int
    ended_ms: int
    target: Any = None  # a weak reference to the caller's estimator, when there is one
    requirements_key: frozenset[str] = field(default_factory=frozenset)
    child_run_id: str = ""  # the fit's own run, once opened (by the kernel, for its fit logger)


# -- pure helpers -----------------------------------------------------------------------------------


def snapshot(value: Any, limit: int = COPY_LIMIT) -> Any:
    """A deep copy of ``value`` (training call arguments and result), sharing the biggest arrays.

    Arrays and frames beyond ``limit`` bytes together are shared rather than copied
    (a person rarely changes training data in place; doubling a large one would
    cost the kernel's memory). What cannot be copied is shared as it is.
    """
    sized = sorted(((_nbytes(v), id(v), v) for v in _leaves(value)), key=lambda t: t[0], reverse=True)
    total = sum(size for size, _, _ in sized)
    memo: dict[int, Any] = {}
    for size, ident, obj in sized:
        if total <= limit or not size:
            break
        memo[ident] = obj
        total -= size
    try:
        return copy.deepcopy(value, memo)
    except Exception as exc:
        log.debug("hubforge: sharing training data uncopied: %s", exc)
        return value


def _leaves(value: Any) -> Iterator[Any]:
    """The objects a snapshot may share: arguments after the first (the estimator), kwargs."""
    args, kwargs, _ = value
    yield from args[1:]
    yield from kwargs.values()


def _nbytes(obj: Any) -> int:
    size = getattr(obj, "nbytes", None)
    if isinstance(size, int):
        return size
    usage = getattr(obj, "memory_usage", None)
    if callable(usage):
        try:
            return int(usage(deep=False).sum())
        except Exception:
            return 0
    return 0


def run_name(args: tuple[Any, ...], original: Callable[..., Any]) -> str:
    """The run name: the estimator's class for a method, else the function's name."""
    if args and not isinstance(args[0], str | bytes | int | float) and hasattr(args[0], "__class__"):
        name = type(args[0]).__name__
        if name not in ("ndarray", "DataFrame", "list", "dict", "tuple"):
            return name
    return getattr(original, "__name__", "training")


def requirements_key(args: tuple[Any, ...]) -> frozenset[str]:
    """The top-level packages of the estimator and of what it holds (its params)."""
    if not args:
        return frozenset()
    found = {type(args[0]).__module__.split(".")[0]}
    get_params = getattr(args[0], "get_params", None)
    if callable(get_params):
        with suppress(Exception):
            found |= {type(v).__module__.split(".")[0] for v in get_params(deep=True).values()}
    return frozenset(found - {"builtins"})


def fitted(original: Callable[..., Any], result: Any) -> Callable[..., Any]:
    """An ``original`` that hands back the training call's (copied) result without training."""

    @functools.wraps(original)
    def trained(*_args: Any, **_kwargs: Any) -> Any:
        return result

    return trained


def weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def now_ms() -> int:
    return int(time.time() * 1000)
