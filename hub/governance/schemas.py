"""JSON schemas of the governance API: bodies are validated with them, the OpenAPI document lists them.

Also :func:`describe`, which turns the first validation error into one line
that names the field, for a 400 a person can act on.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from .model import (
    DATA_ACCESS,
    DECISIONS,
    DEFAULT_GRANT_DAYS,
    DEPLOY_STAGES,
    DEPLOY_STATUSES,
    KINDS,
    MAX_COMMENT,
    MAX_GRANT_DAYS,
    MAX_JUSTIFICATION,
    MAX_MODEL,
    MAX_TARGET,
    STATUSES,
)

__all__ = [
    "APPROVAL_REQUEST",
    "AUDIT_EVENT",
    "AUDIT_PAGE",
    "COMPONENTS",
    "DECISION_BODY",
    "DEPLOY_REQUEST_BODY",
    "ERROR",
    "GRANT",
    "HEALTH",
    "INDEX",
    "INGESTED",
    "MODEL_NAME",
    "NEW_REQUEST_BODY",
    "POLICY_RESULT",
    "WHOAMI",
    "describe",
    "field_label",
    "first_error",
]

# Free text holds no NUL: PostgreSQL's text types refuse it, so no backend may
# accept it. Free text that must not be blank holds something besides
# whitespace, spelt out as ECMA-262's \s (the dialect of JSON Schema patterns):
# Python's \s also counts U+001C-U+001F and U+0085, and the service and its
# clients must agree on what is blank. Both patterns run in linear time.
_SPACE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_NO_NUL = r"^[^\x00]*$"
_TEXT = {"type": "string", "pattern": rf"^[{_SPACE}]*[^{_SPACE}\x00][^\x00]*$"}

#: A registered model's name as a deploy request may name it: safe in a URL path and a label.
MODEL_NAME = {
    "type": "string",
    "pattern": r"^[A-Za-z0-9_][A-Za-z0-9 ._-]*$",
    "maxLength": MAX_MODEL,
    "description": "The registered model (letters, digits, space, '.', '_', '-').",
    "x-problem": "must name a registered model: letters, digits, space, '.', '_', '-'",
}
MODEL_VERSION = {
    "type": "string",
    "pattern": r"^[1-9][0-9]{0,9}$",
    "description": "The model version number.",
    "x-problem": "must be a model version number (1, 2, ...)",
}
CANARY_PERCENT = {
    "type": "integer",
    "minimum": 0,
    "maximum": 100,
    "description": "The share of traffic the new version gets at first (0: it replaces what is served).",
}
DURATION_DAYS = {
    "type": "integer",
    "minimum": 1,
    "maximum": MAX_GRANT_DAYS,
    "description": f"How many days the access lasts once approved (data-access; default {DEFAULT_GRANT_DAYS}).",
}

#: A field a request of this kind may not carry; ``x-problem`` is what a 400 says of it.
_DEPLOY_ONLY = {"not": {}, "x-problem": "belongs to deploy requests, not data-access"}
_DERIVED = {"not": {}, "x-problem": "is not sent with deploy requests: it is made from model and version"}
_DATA_ACCESS_ONLY = {"not": {}, "x-problem": "belongs to data-access requests, not deploy requests"}

NEW_REQUEST_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "justification"],
    # Which fields each kind takes, in the schema itself: a body the schema accepts is one
    # the service accepts (schemathesis checks exactly that).
    "allOf": [
        {
            "if": {"properties": {"kind": {"const": DATA_ACCESS}}, "required": ["kind"]},
            "then": {
                "required": ["target"],
                "properties": {"model": _DEPLOY_ONLY, "version": _DEPLOY_ONLY, "canary_percent": _DEPLOY_ONLY},
            },
        },
        {
            "if": {"properties": {"kind": {"enum": list(DEPLOY_STAGES)}}, "required": ["kind"]},
            "then": {
                "required": ["model", "version"],
                "properties": {"target": _DERIVED, "duration_days": _DATA_ACCESS_ONLY},
            },
        },
    ],
    "description": (
        "A deploy request (deploy-staging, deploy-production) names model and version, and may give "
        "canary_percent; a data-access request names its target (the dataset), and may give "
        "duration_days."
    ),
    "properties": {
        "kind": {
            "type": "string",
            "enum": list(KINDS),
            "description": "What is requested.",
        },
        "target": {
            **_TEXT,
            "maxLength": MAX_TARGET,
            "description": "The dataset concerned (data-access); deploy requests derive it from the model.",
        },
        "model": MODEL_NAME,
        "version": MODEL_VERSION,
        "canary_percent": CANARY_PERCENT,
        "duration_days": DURATION_DAYS,
        "justification": {
            **_TEXT,
            "maxLength": MAX_JUSTIFICATION,
            "description": "Why, for the approver.",
        },
    },
}

#: A deploy request as the policy's pre-check takes it.
DEPLOY_REQUEST_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "model", "version", "justification"],
    "properties": {
        **{k: v for k, v in NEW_REQUEST_BODY["properties"].items() if k not in ("target", "duration_days")},
        "kind": {"type": "string", "enum": list(DEPLOY_STAGES), "description": "What is requested."},
    },
}

DECISION_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["decision"],
    "properties": {
        "decision": {"type": "string", "enum": list(DECISIONS)},
        "comment": {
            "type": "string",
            "pattern": _NO_NUL,
            "maxLength": MAX_COMMENT,
            "description": "The approver's reason.",
        },
    },
}

_TIME = {"type": "string", "format": "date-time"}
_MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
_MAYBE_TEXT = {"type": ["string", "null"]}

APPROVAL_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "id",
        "kind",
        "target",
        "justification",
        "requester",
        "status",
        "created",
        "decided",
        "decided_by",
        "comment",
    ],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": list(KINDS)},
        "target": {"type": "string"},
        "justification": {"type": "string"},
        "requester": {"type": "string"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "created": _TIME,
        "decided": _MAYBE_TIME,
        "decided_by": _MAYBE_TEXT,
        "comment": _MAYBE_TEXT,
        "model": _MAYBE_TEXT,
        "version": _MAYBE_TEXT,
        "canary_percent": {"type": ["integer", "null"]},
        "digest": {**_MAYBE_TEXT, "description": "sha256 of the approved model version's files."},
        "policy": {
            "type": ["object", "null"],
            "description": "The deploy policy's last word: {policy, decision, reasons}.",
        },
        "deployment": {
            "type": ["object", "null"],
            "description": "An approved deploy request's deployment: status (deploying, deployed, failed, "
            "rolled_back), the endpoint that serves it, the error, when it changed.",
            "additionalProperties": False,
            "required": ["status", "endpoint", "error", "changed"],
            "properties": {
                "status": {"enum": list(DEPLOY_STATUSES)},
                "endpoint": {"type": ["string", "null"]},
                "error": {"type": ["string", "null"]},
                "changed": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "duration_days": {
            "type": ["integer", "null"],
            "description": "A data-access request: the days access lasts once approved (null: the default).",
        },
        "expires": {**_MAYBE_TIME, "description": "An approved data-access request: when its access ends."},
    },
}

#: An approved data-access request whose access has not ended.
GRANT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["request_id", "user", "target", "granted", "expires", "approved_by"],
    "properties": {
        "request_id": {"type": "string", "description": "The data-access request that was approved."},
        "user": {"type": "string", "description": "Who has access: the requester."},
        "target": {"type": "string", "description": "To what, as requested (e.g. feature_view:<project>/<view>)."},
        "granted": {**_TIME, "description": "When it was approved."},
        "expires": {**_TIME, "description": "When the access ends."},
        "approved_by": {"type": "string"},
    },
}

POLICY_RESULT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["policy", "decision", "reasons"],
    "properties": {
        "policy": {"type": "string", "description": "The Rego package that decided."},
        "decision": {"type": "string", "enum": ["allow", "deny"]},
        "reasons": {"type": "array", "items": {"type": "string"}, "description": "Why it denies, one sentence each."},
    },
}

WHOAMI: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "groups", "personas", "scopes", "admin"],
    "properties": {
        "name": {"type": "string"},
        "groups": {"type": "array", "items": {"type": "string"}},
        "personas": {"type": "array", "items": {"type": "string"}},
        "scopes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The caller's custom: scopes, sorted.",
        },
        "admin": {"type": "boolean"},
        "isolation": {
            "type": "object",
            "additionalProperties": False,
            "required": ["mode", "words"],
            "description": "How people's notebooks are kept apart on this platform.",
            "properties": {"mode": {"enum": ["users", "none", "pods"]}, "words": {"type": "string"}},
        },
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["status", "message"],
    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
}

HEALTH: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "ok"}},
}

INDEX: dict[str, Any] = {
    "type": "object",
    "required": ["service", "user", "openapi", "whoami"],
    "properties": {
        "service": {"type": "string"},
        "user": {"type": "string"},
        "openapi": {"type": "string", "description": "Path of the OpenAPI document."},
        "whoami": {"type": "string"},
    },
}

AUDIT_EVENT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["position", "time", "schema", "user", "action", "outcome", "resource", "observed", "emitter", "event"],
    "properties": {
        "position": {"type": "integer", "description": "Its place in the hash chain."},
        "time": _TIME,
        "schema": {"type": "string", "description": "The event's schema ($id)."},
        "user": {"type": "string"},
        "action": {"type": "string"},
        "outcome": {"type": "string", "enum": ["success", "failure", "denied"]},
        "resource": {"type": "object"},
        "observed": {
            "type": "string",
            "enum": ["platform", "reported"],
            "description": "Seen by the hub or a service, or reported by a person's server.",
        },
        "emitter": {"type": "string"},
        "event": {"type": "object", "description": "The event as its schema describes it."},
    },
}

AUDIT_PAGE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["events", "next"],
    "properties": {
        "events": {"type": "array", "items": AUDIT_EVENT},
        "next": {"type": ["string", "null"], "description": "The cursor of the next page; null on the last."},
    },
}

INGESTED: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["stored", "duplicates", "acknowledged"],
    "properties": {
        "stored": {"type": "integer", "description": "Records stored now."},
        "duplicates": {"type": "integer", "description": "Records the trail had already (sent again)."},
        "acknowledged": {"type": "integer", "description": "The highest ``__seq__`` of the request, now kept."},
    },
}

#: Named schemas for the OpenAPI ``components`` section.
COMPONENTS: dict[str, dict[str, Any]] = {
    "NewRequest": NEW_REQUEST_BODY,
    "Decision": DECISION_BODY,
    "ApprovalRequest": APPROVAL_REQUEST,
    "Grant": GRANT,
    "AuditEvent": AUDIT_EVENT,
    "AuditPage": AUDIT_PAGE,
    "Ingested": INGESTED,
    "WhoAmI": WHOAMI,
    "Error": ERROR,
    "Health": HEALTH,
    "Index": INDEX,
}


def first_error(schema: dict[str, Any], instance: Any) -> jsonschema.ValidationError | None:
    """The most useful validation error of ``instance``, or None when it is valid."""
    validator = jsonschema.Draft202012Validator(schema)
    return jsonschema.exceptions.best_match(validator.iter_errors(instance))


def describe(error: jsonschema.ValidationError) -> str:
    """One line naming the field and what is wrong with it.

    The offending value is not echoed back: it may be long, or not the
    caller's to see in a log.
    """
    path = [str(part) for part in error.absolute_path]
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"unknown field {field_label([*path, extra[0]])}" if extra else "unknown field"
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return f"missing field {field_label([*path, missing[0]])}"
    subject = f"field {field_label(path)}" if path else "request body"
    return f"{subject} {_problem(error)}"


def _problem(error: jsonschema.ValidationError) -> str:
    expected = error.validator_value
    if error.validator in ("pattern", "not") and isinstance(error.schema, dict) and "x-problem" in error.schema:
        return str(error.schema["x-problem"])
    if error.validator in ("minimum", "maximum"):
        return f"must be {'at least' if error.validator == 'minimum' else 'at most'} {expected}"
    if error.validator == "type":
        types = " or ".join(expected) if isinstance(expected, list) else expected
        return f"must be of type {types}"
    if error.validator == "enum":
        return "must be one of " + ", ".join(map(str, expected))
    if error.validator == "maxLength":
        return f"must be at most {expected} characters"
    if error.validator == "pattern":
        return "must not contain NUL (\\u0000)" if "\x00" in error.instance else "must not be blank"
    return "is invalid"


def field_label(path: list[str]) -> str:
    """The field at ``path``, quoted and shortened: field names come from the caller.

    repr() escapes what is not printable (control characters, lone
    surrogates), so the label is always safe to send and to log.
    """
    name = ".".join(path)
    return repr(name if len(name) <= 60 else name[:57] + "...")
