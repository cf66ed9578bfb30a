"""Governance policies in Rego, compiled at start-up and evaluated in-process with regopy.

The policy files come from the platform config (``services.governance.policies``; the
defaults ship in ``hub/governance/policies/``). Each package the service asks about
(:data:`DEPLOY_PACKAGE`) must define ``allow`` (a boolean) and ``deny`` (a set of
sentences, the reasons a person reads). :class:`PolicyEngine` checks all of that when
it is built, so a broken policy stops the service's start with one line naming the file
and the error, rather than refusing every request later.

regopy's interpreter is not shared between threads: :meth:`PolicyEngine.evaluate` holds
a lock, and the service calls it from a worker thread (:meth:`PolicyEngine.decide`),
never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from regopy import Interpreter

from hubforge.errors import ConfigError

__all__ = [
    "DEFAULT_POLICY_DIR",
    "DEPLOY_PACKAGE",
    "PolicyEngine",
    "PolicyResult",
    "default_policy_files",
    "rego_error_line",
]

#: The package deploy requests are judged by.
DEPLOY_PACKAGE = "hubforge.deploy"
#: The policies hubforge ships (used when the platform config names none).
DEFAULT_POLICY_DIR = "policies"
#: What the start-up check evaluates: every field the service sends, with harmless values.
SAMPLE_INPUT: dict[str, Any] = {
    "action": "approve",
    "request": {
        "id": "sample",
        "kind": "deploy-production",
        "stage": "production",
        "model": "sample",
        "version": "1",
        "canary_percent": 0,
        "requester": "someone",
    },
    "actor": {"name": "someone-else", "groups": [], "grants": []},
    "evidence": {
        "available": True,
        "model_card": {"present": False, "completeness": 0.0, "missing": [], "risk": None},
        "metrics": {},
        "problems": [],
    },
}
_LENGTH_PREFIXED = re.compile(r"(\d+):")


@dataclass(frozen=True)
class PolicyResult:
    """What a policy said: ``allow`` and, when it denies, why (one sentence each)."""

    policy: str
    allow: bool
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As the API and the audit trail carry it."""
        return {"policy": self.policy, "decision": "allow" if self.allow else "deny", "reasons": list(self.reasons)}


def default_policy_files() -> list[Path]:
    """The policy files hubforge ships."""
    folder = resources.files(__package__).joinpath(DEFAULT_POLICY_DIR)
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".rego"))


def _take(text: str, start: int) -> tuple[str, int]:
    """The length-prefixed string (``12:this is text``) at ``start`` and the index after it."""
    match = _LENGTH_PREFIXED.match(text, start)
    if not match:
        return "", start
    begin = match.end()
    end = begin + int(match.group(1))
    return text[begin:end], end


def rego_error_line(error: str, source: str) -> str:
    """regopy's first error (an S-expression of length-prefixed strings) as ``line L:C: message``."""
    at = error.find("(error ")
    if at < 0:
        return error.strip().splitlines()[0] if error.strip() else "unknown error"
    _name, end = _take(error, at + len("(error "))
    position = re.match(r"\|(\d+)\|", error[end:])
    msg_at = error.find("(errormsg ", end)
    message = _take(error, msg_at + len("(errormsg "))[0] if msg_at >= 0 else "syntax error"
    if not position:
        return message
    offset = int(position.group(1))
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}:{column}: {message}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy {path}: cannot read it: {exc}") from exc


class PolicyEngine:
    """Rego modules and their data, compiled once; evaluate a package for an input."""

    def __init__(self, files: Sequence[Path], data: Mapping[str, Any] | None = None) -> None:
        if not files:
            raise ConfigError("services.governance.policies names no policy file")
        self.files = [Path(f) for f in files]
        self.sources = {path: _read(path) for path in self.files}
        self.data = {"hubforge": dict(data or {})}
        self._lock = threading.Lock()
        for path, source in self.sources.items():
            self._interpreter({path: source})  # each alone, so a syntax error names its file
        self._rego = self._interpreter(self.sources)
        self._check_package(DEPLOY_PACKAGE)

    def _interpreter(self, sources: Mapping[Path, str]) -> Interpreter:
        rego = Interpreter()
        for path, source in sources.items():
            try:
                rego.add_module(str(path), source)
            except Exception as exc:  # regopy raises its own RegoError (an Exception) for bad source
                raise ConfigError(f"policy {path}: {rego_error_line(str(exc), source)}") from exc
        rego.add_data_json(json.dumps(self.data))
        return rego

    def _check_package(self, package: str) -> None:
        """Evaluate ``package`` once on :data:`SAMPLE_INPUT`; ConfigError naming what is wrong."""
        names = ", ".join(str(p) for p in self.files)
        try:
            result = self._query(package, SAMPLE_INPUT)
        except ConfigError as exc:
            raise ConfigError(f"policy {self._culprit(package) or names}: {exc}") from exc
        if not isinstance(result.get("allow"), bool):
            raise ConfigError(f"policy {names}: data.{package}.allow must be defined as a boolean")
        deny = result.get("deny", [])
        if not isinstance(deny, list) or not all(isinstance(r, str) for r in deny):
            raise ConfigError(f"policy {names}: data.{package}.deny must be a set of strings")

    def _culprit(self, package: str) -> Path | None:
        """The one file that fails to evaluate on its own, when there is one."""
        for path, source in self.sources.items():
            try:
                self._query(package, SAMPLE_INPUT, self._interpreter({path: source}))
            except ConfigError:
                return path
        return None

    def _query(self, package: str, document: Mapping[str, Any], rego: Interpreter | None = None) -> dict[str, Any]:
        rego = rego or self._rego
        try:
            rego.set_input_term(json.dumps(document))
            output = rego.query(f"data.{package}")
            text = str(output)
            if not output.ok():
                raise ConfigError(f"evaluating data.{package} failed ({text.strip('<>')})")
            found = json.loads(text)["expressions"][0]
        except ConfigError:
            raise
        except Exception as exc:  # regopy's errors and its unparsable answers alike
            raise ConfigError(f"evaluating data.{package} failed: {exc}") from exc
        return found if isinstance(found, dict) else {}

    def evaluate(self, package: str, document: Mapping[str, Any]) -> PolicyResult:
        """Evaluate ``package`` for the input ``document`` (blocking; see :meth:`decide`).

        A policy that fails at run time denies, saying so: it never allows by accident.
        """
        with self._lock:
            try:
                result = self._query(package, document)
            except ConfigError as exc:
                return PolicyResult(package, False, (f"the policy could not be evaluated: {exc}",))
        reasons = tuple(sorted(str(r) for r in _as_list(result.get("deny"))))
        allow = result.get("allow") is True and not reasons
        return PolicyResult(package, allow, reasons)

    async def decide(self, package: str, document: Mapping[str, Any]) -> PolicyResult:
        """:meth:`evaluate` in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.evaluate, package, document)


def _as_list(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list) else ()
