"""The exceptions hubforge raises, and the refusals every edge answers the same way.

Every error a person can act on derives from :class:`HubforgeError`; library
errors are translated at the boundary (``raise ConfigError(...) from exc``).

A :class:`Refusal` is an answer, not a fault: the request was invalid, forbidden,
named nothing that exists, conflicts with the current state, or cannot be served
now. Each carries its HTTP status; each edge has one translator to its own wire
format: :func:`http_answer` for tornado handlers (the hub's spawners, the
governance service), :data:`MLFLOW_CODES` for MLflow's JSON errors, and
:data:`CLI_EXIT` for the command line's one-line errors.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CLI_EXIT",
    "MLFLOW_CODES",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "HubforgeError",
    "Invalid",
    "LaunchError",
    "NotFound",
    "Refusal",
    "StoreError",
    "Unavailable",
    "http_answer",
]


class HubforgeError(Exception):
    """Base class of every hubforge error; ``str(err)`` is one line for a person."""


class ConfigError(HubforgeError):
    """The platform config is missing, unreadable or invalid.

    The message names the file, the key (as a dotted path) and the problem.
    """


class LaunchError(HubforgeError):
    """A platform process could not be started or did not become ready."""


class Refusal(HubforgeError):
    """A request the platform answers with "no": ``status`` says which kind.

    Subclass one of the kinds below; ``status`` given to one refusal overrides its
    kind's (a policy that answers with several statuses).
    """

    status: ClassVar[int] = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status  # type: ignore[misc]


class Invalid(Refusal):
    """The request itself is wrong (a bad value, a missing field): 400."""

    status = 400


class Forbidden(Refusal):
    """The caller may not do this: 403."""

    status = 403


class NotFound(Refusal):
    """Nothing by that name, or nothing the caller may see (one answer for both): 404."""

    status = 404


class Conflict(Refusal):
    """The request conflicts with the current state (already decided, already held): 409."""

    status = 409


class Unavailable(Refusal):
    """A backend the answer depends on is down; try again later: 503."""

    status = 503


class StoreError(Unavailable):
    """A governance store operation failed (database unreachable, bad state)."""


#: MLflow's error codes, by status, for refusals answered in MLflow's JSON shape.
MLFLOW_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    503: "TEMPORARILY_UNAVAILABLE",
}
#: The command line's exit status for any refusal or error a person can act on.
CLI_EXIT = 2


def http_answer(refusal: Refusal) -> tuple[int, str]:
    """The HTTP status and the one-line message a web edge answers ``refusal`` with."""
    return refusal.status, str(refusal)
