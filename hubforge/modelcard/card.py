"""The model card itself: its schema, validation, completeness and canonical form.

Pure functions over plain JSON data (dicts, lists, strings, numbers): no I/O but
reading the package's own data files. A card is valid when it matches
``card.schema.json`` and passes the checks a schema cannot express: license
identifiers are SPDX identifiers or expressions (``vendor/spdx/ids.json``), metric
values are finite numbers, confidence intervals are in order, and the whole card is
at most :data:`MAX_CARD_BYTES` as canonical JSON.

Every problem is a :class:`CardError` naming the field by its JSON path
(``quantitative_analysis.performance_metrics[0].value``) with a one-line message;
:func:`check_card` raises them as :class:`InvalidCard`, a 400 :class:`~hubforge.errors.Invalid`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import jsonschema

from hubforge.errors import Invalid

__all__ = [
    "MAX_CARD_BYTES",
    "PRODUCTION_FIELDS",
    "SCHEMA_VERSION",
    "CardError",
    "Completeness",
    "InvalidCard",
    "canonical_json",
    "card_digest",
    "check_card",
    "completeness",
    "empty_card",
    "parse_card",
    "schema",
    "spdx_problem",
    "validate_card",
]

#: The ``schema_version`` of the cards this module writes and reads.
SCHEMA_VERSION = "1"
#: The largest card, in bytes of its canonical JSON (:func:`canonical_json`).
MAX_CARD_BYTES = 256 * 1024

#: The fields a card needs before its model may go to production: name -> the paths of
#: which at least one must hold something (a non-blank text, a non-empty list). The
#: governance policy requires ``completeness(card).score == 1.0`` over these.
PRODUCTION_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "model_details.overview": ("model_details.overview",),
        "model_details.owners": ("model_details.owners",),
        "model_parameters.model_architecture": ("model_parameters.model_architecture",),
        "intended_use": ("intended_use",),
        "out_of_scope_use": ("out_of_scope_use",),
        "training_data": ("training_data.datasets", "training_data.feature_views"),
        "quantitative_analysis.performance_metrics": ("quantitative_analysis.performance_metrics",),
        "fairness.evaluations": ("fairness.evaluations",),
        "considerations.limitations": ("considerations.limitations",),
        "considerations.ethical_considerations": ("considerations.ethical_considerations",),
        "risk_rating": ("risk_rating",),
    }
)

Path = tuple[str | int, ...]
_TOP = "(card)"
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LICENSE_REF = re.compile(r"(DocumentRef-[A-Za-z0-9.\-]+:)?LicenseRef-[A-Za-z0-9.\-]+")
_SPDX_TOKEN = re.compile(r"\s*(?:([()])|([A-Za-z0-9.+:\-]+)|(\S))")
_OPERATORS = ("AND", "OR", "WITH")


@dataclass(frozen=True)
class CardError:
    """One problem of a card: the field's JSON path and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidCard(Invalid):
    """A card that is not valid; ``errors`` holds every problem, ``str()`` names the first."""

    def __init__(self, errors: Sequence[CardError]) -> None:
        self.errors = tuple(errors)
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(f"invalid model card: {self.errors[0]}{more}")


@dataclass(frozen=True)
class Completeness:
    """How much of a list of fields a card fills: ``score`` in 0..1, the names ``missing``."""

    score: float
    missing: list[str] = field(default_factory=list)


@cache
def schema() -> dict[str, Any]:
    """The canonical card's JSON schema (draft 2020-12); shared, do not modify it."""
    text = resources.files(__package__).joinpath("card.schema.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def _spdx() -> dict[bool, dict[str, str]]:
    """SPDX ids by their lowercase spelling: ``[True]`` licenses, ``[False]`` exceptions."""
    text = resources.files(__package__).joinpath("vendor/spdx/ids.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return {
        kind: {name.lower(): name for name in data[key]} for kind, key in ((True, "licenses"), (False, "exceptions"))
    }


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    # fromisoformat alone also takes 20240101 and week dates; the pattern keeps YYYY-MM-DD.
    return not isinstance(value, str) or bool(_DATE.fullmatch(value) and date.fromisoformat(value))


@_FORMATS.checks("uri", raises=ValueError)
def _is_url(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not re.search(r"[\s\x00-\x1f]", value)


@cache
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(schema(), format_checker=_FORMATS)


def _format_path(path: Path) -> str:
    """``("a", "b", 0, "c")`` -> ``"a.b[0].c"``; the empty path is the card itself."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or _TOP


def _kind(value: object) -> str:
    names = {bool: "a boolean", str: "a string", list: "a list", dict: "an object", type(None): "null"}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


_TYPE_WORDS = {"string": "text", "number": "a number", "object": "an object", "array": "a list"}
_FORMAT_WORDS = {
    "date": "must be an ISO 8601 date YYYY-MM-DD that exists",
    "uri": "must be an absolute http or https URL",
}
_PATTERN_WORDS = {
    "short": "must be one line of text, not blank",
    "text": "must not be blank",
    "task": "must be lowercase words joined by hyphens (a pipeline tag such as tabular-classification)",
}


def _explain(error: jsonschema.ValidationError) -> Iterator[tuple[Path, str]]:
    """The paths and one-line messages of one schema error, as a person reads them."""
    path: Path = tuple(error.absolute_path)
    value, kind, limit = error.instance, error.validator, error.validator_value
    if kind == "additionalProperties":
        known = ", ".join(error.schema.get("properties", {}))
        for extra in sorted(set(value) - set(error.schema.get("properties", {})), key=str):
            yield (*path, str(extra)), f"unknown field {extra!r} (known: {known})"
    elif kind == "required":
        for name in limit:
            if name not in value:
                yield (*path, name), "required field is missing"
    elif kind == "type":
        yield path, f"must be {_TYPE_WORDS.get(limit, limit)}, not {_kind(value)}"
    elif kind in ("minProperties", "maxProperties"):
        yield path, "a license has exactly one of identifier or custom_text"
    else:
        yield path, _message(error)


def _message(error: jsonschema.ValidationError) -> str:
    value, kind, limit = error.instance, error.validator, error.validator_value
    if kind == "const":
        return f"must be {limit!r}"
    if kind == "enum":
        return "must be one of: " + ", ".join(map(str, limit))
    if kind == "maxLength":
        return f"is {len(value)} characters long; the limit is {limit}"
    if kind == "maxItems":
        return f"has {len(value)} items; the limit is {limit}"
    if kind == "format":
        return _FORMAT_WORDS.get(limit, f"is not a valid {limit}")
    if kind == "pattern":
        defs = schema()["$defs"]
        return next((w for name, w in _PATTERN_WORDS.items() if defs[name]["pattern"] == limit), "is malformed")
    return " ".join(error.message.split())[:200]


def _metrics(card: Mapping[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The performance metrics that are objects, with their paths."""
    metrics = _get(card, "quantitative_analysis", "performance_metrics")
    for i, metric in enumerate(metrics if isinstance(metrics, list) else []):
        if isinstance(metric, dict):
            yield ("quantitative_analysis", "performance_metrics", i), metric


def _numbers(card: Mapping[str, Any]) -> Iterator[tuple[Path, Any]]:
    """Every value the schema types as a number, with its path (wherever the shape allows)."""
    for path, metric in _metrics(card):
        yield (*path, "value"), metric.get("value")
        interval = metric.get("confidence_interval")
        if isinstance(interval, dict):
            for bound in ("lower_bound", "upper_bound"):
                yield (*path, "confidence_interval", bound), interval.get(bound)
    evaluations = _get(card, "fairness", "evaluations")
    for i, evaluation in enumerate(evaluations if isinstance(evaluations, list) else []):
        if isinstance(evaluation, dict):
            yield ("fairness", "evaluations", i, "value"), evaluation.get("value")


def _check_numbers(card: Mapping[str, Any]) -> Iterator[tuple[Path, str]]:
    for path, value in _numbers(card):
        if isinstance(value, float) and not math.isfinite(value):
            yield path, f"must be a finite number, not {value}"
    for path, metric in _metrics(card):
        interval = metric.get("confidence_interval")
        if not isinstance(interval, dict):
            continue
        low, high = interval.get("lower_bound"), interval.get("upper_bound")
        if _is_number(low) and _is_number(high) and low > high:
            yield (*path, "confidence_interval"), f"lower_bound {low} is above upper_bound {high}"


def _check_licenses(card: Mapping[str, Any]) -> Iterator[tuple[Path, str]]:
    licenses = _get(card, "model_details", "licenses")
    for i, license_ in enumerate(licenses if isinstance(licenses, list) else []):
        identifier = license_.get("identifier") if isinstance(license_, dict) else None
        problem = spdx_problem(identifier) if isinstance(identifier, str) and identifier.strip() else None
        if problem:
            yield ("model_details", "licenses", i, "identifier"), problem


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _order(path: Path) -> tuple[int, tuple[tuple[int, int, str], ...]]:
    """Shallowest first (usually the cause of deeper problems), then in list order."""
    return len(path), tuple((1, 0, p) if isinstance(p, str) else (0, p, "") for p in path)


def validate_card(data: Any) -> list[CardError]:
    """Every problem of ``data`` as a card, shallowest first; empty when it is valid."""
    if not isinstance(data, dict):
        return [CardError(_TOP, f"a model card is a JSON object, not {_kind(data)}")]
    try:
        size, not_json = len(canonical_json(data)), None
    except InvalidCard as exc:
        size, not_json = 0, exc.errors[0]
        if isinstance(exc.__cause__, RecursionError):
            return [not_json]
    if size > MAX_CARD_BYTES:
        return [CardError(_TOP, f"the card is {size} bytes as canonical JSON; the limit is {MAX_CARD_BYTES}")]
    found = [pair for error in _validator().iter_errors(data) for pair in _explain(error)]
    found += [*_check_numbers(data), *_check_licenses(data)]
    unique = sorted(dict.fromkeys(found), key=lambda pair: _order(pair[0]))
    errors = [CardError(_format_path(path), message) for path, message in unique]
    # What the schema lets through but JSON cannot hold (a Decimal, a set in a valid
    # place) is still no card.
    return errors or ([not_json] if not_json else [])


def check_card(data: Any) -> dict[str, Any]:
    """``data`` when it is a valid card; else raise :class:`InvalidCard` naming every problem."""
    errors = validate_card(data)
    if errors:
        raise InvalidCard(errors)
    card: dict[str, Any] = data
    return card


def spdx_problem(expression: str) -> str | None:
    """What is wrong with ``expression`` as an SPDX license expression; None if nothing.

    Takes identifiers of the SPDX License List (``MIT``, ``Apache-2.0``), ``+``
    (``GPL-2.0+``), ``LicenseRef-...`` ids, and ``AND``/``OR``/``WITH`` with
    parentheses (``(MIT OR Apache-2.0) AND GPL-2.0-only WITH Classpath-exception-2.0``).
    """
    tokens: list[str] = []
    for bracket, word, other in _SPDX_TOKEN.findall(expression.strip()):
        if other:
            return f"unexpected character {other!r} in a license expression"
        tokens.append(bracket or word)
    if not tokens:
        return "must not be blank"
    try:
        end = _spdx_or(tokens, 0)
    except ValueError as exc:
        return str(exc)
    if end == len(tokens):
        return None
    return (
        _misplaced(tokens[end])
        if tokens[end].upper() in _OPERATORS
        else f"unexpected {tokens[end]!r} in a license expression"
    )


def _spdx_or(tokens: list[str], at: int) -> int:
    """Parse ``and-expr (OR and-expr)*`` from ``at``; the index after it."""
    at = _spdx_and(tokens, at)
    while at < len(tokens) and tokens[at] == "OR":
        at = _spdx_and(tokens, at + 1)
    return at


def _spdx_and(tokens: list[str], at: int) -> int:
    at = _spdx_with(tokens, at)
    while at < len(tokens) and tokens[at] == "AND":
        at = _spdx_with(tokens, at + 1)
    return at


def _spdx_with(tokens: list[str], at: int) -> int:
    if at >= len(tokens):
        raise ValueError("the license expression ends too early")
    if tokens[at] == "(":
        at = _spdx_or(tokens, at + 1)
        if at >= len(tokens) or tokens[at] != ")":
            raise ValueError("a '(' in the license expression is not closed")
        at += 1
    else:
        _spdx_id(tokens[at], license_=True)
        at += 1
    if at < len(tokens) and tokens[at] == "WITH":
        if at + 1 >= len(tokens):
            raise ValueError("WITH must be followed by an SPDX license exception")
        _spdx_id(tokens[at + 1], license_=False)
        at += 2
    return at


def _spdx_id(word: str, *, license_: bool) -> None:
    known = _spdx()[license_]
    bare = word.removesuffix("+") if license_ else word
    if known.get(bare.lower()) == bare or (license_ and _LICENSE_REF.fullmatch(word)):
        return
    if word.upper() in _OPERATORS or word in ("(", ")"):
        raise ValueError(_misplaced(word))
    if bare.lower() in known:
        raise ValueError(f"{word!r} is spelled {known[bare.lower()]!r} in SPDX")
    if license_:
        raise ValueError(f"{word!r} is not an SPDX license identifier (for another license: custom_text)")
    raise ValueError(f"{word!r} is not an SPDX license exception")


def _misplaced(word: str) -> str:
    return f"{word!r} is out of place (the operators are AND, OR and WITH, in capitals)"


def completeness(card: Mapping[str, Any], fields: Mapping[str, Sequence[str]] = PRODUCTION_FIELDS) -> Completeness:
    """The share of ``fields`` (name -> paths, any one of which counts) that ``card`` fills."""
    missing = [name for name, paths in fields.items() if not any(_present(_get(card, *p.split("."))) for p in paths)]
    if not fields or not missing:
        return Completeness(1.0, [])
    return Completeness((len(fields) - len(missing)) / len(fields), missing)


def _present(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list):
        return any(_present(item) for item in value)
    if isinstance(value, dict):
        return any(_present(item) for item in value.values())
    return value is not None


def canonical_json(card: Mapping[str, Any]) -> bytes:
    """The card's canonical bytes: UTF-8 JSON, keys sorted, no whitespace, no NaN.

    Equal cards give equal bytes, so the digest of these bytes identifies the card.
    """
    try:
        text = json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        words = " ".join(str(exc).split())[:200]
        raise InvalidCard([CardError(_TOP, f"not JSON data: {words}")]) from exc


def card_digest(card: Mapping[str, Any]) -> str:
    """The sha256 (hex) of the card's :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(card)).hexdigest()


def parse_card(raw: bytes | str) -> dict[str, Any]:
    """The JSON object in ``raw`` (no NaN, no repeated keys, at most :data:`MAX_CARD_BYTES`).

    Only parses; :func:`check_card` validates.
    """
    if len(raw.encode("utf-8") if isinstance(raw, str) else raw) > MAX_CARD_BYTES:
        raise InvalidCard([CardError(_TOP, f"the card is over {MAX_CARD_BYTES} bytes")])
    try:
        data = json.loads(raw, parse_constant=_no_constant, object_pairs_hook=_no_repeats)
    except (ValueError, RecursionError) as exc:
        words = " ".join(str(exc).split())[:200]
        raise InvalidCard([CardError(_TOP, f"not a JSON document: {words}")]) from exc
    if not isinstance(data, dict):
        raise InvalidCard([CardError(_TOP, f"a model card is a JSON object, not {_kind(data)}")])
    return data


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"repeated key {key!r}")
        data[key] = value
    return data


def empty_card(name: str) -> dict[str, Any]:
    """A new card that names the model and nothing else (valid when ``name`` is one line)."""
    return {"schema_version": SCHEMA_VERSION, "model_details": {"name": name}}
