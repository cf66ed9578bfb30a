"""The OpenAPI 3.1 document, generated from the routes and what each handler declares.

A handler lists its operations in ``operations`` (method -> :class:`Operation`);
the scopes come from the method's ``@needs_scope``/``@public`` declaration,
so the document cannot disagree with what is enforced. Building refuses a
handler whose implemented methods and declared operations differ.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tornado import web

from .auth import declared_scopes, is_public
from .schemas import COMPONENTS, ERROR

__all__ = [
    "HTTP_METHODS",
    "Operation",
    "build_spec",
    "implemented_methods",
    "path_pattern",
]

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No content",
    302: "Redirect",
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported media type",
    502: "The hub could not be reached",
    503: "The store is unavailable",
}


@dataclass(frozen=True)
class Operation:
    """One documented operation of a handler.

    ``request`` is the JSON schema the body is validated with; ``responses``
    maps success statuses to their body schema (None: no body), of
    ``media_type`` (JSON unless it says so: an HTML page is ``text/html``;
    errors are JSON whatever it says); ``errors`` lists the error statuses
    beyond those every operation of its sort may give; ``query`` maps query
    parameters to their schema, and ``required_query`` names those a request
    must carry.
    """

    summary: str
    responses: dict[int, dict[str, Any] | None]
    request: dict[str, Any] | None = None
    description: str = ""
    errors: tuple[int, ...] = ()
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    required_query: tuple[str, ...] = ()
    media_type: str = "application/json"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.required_query) - set(self.query))
        if unknown:
            raise ValueError(f"required query parameters {unknown} are not among the query parameters")


def path_pattern(template: str) -> str:
    """The tornado URL pattern of an OpenAPI-style path template (``{name}`` -> a named group)."""
    parts = re.split(r"\{(\w+)\}", template)
    return "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))


def implemented_methods(handler: type[web.RequestHandler]) -> set[str]:
    """The HTTP methods ``handler`` overrides (tornado's defaults answer 405)."""
    return {m for m in HTTP_METHODS if getattr(handler, m) is not getattr(web.RequestHandler, m)}


def _with_refs(schema: Any) -> Any:
    """Replace named component schemas, at any depth, with a ``$ref``."""
    for name, known in COMPONENTS.items():
        if schema is known:
            return {"$ref": f"#/components/schemas/{name}"}
    if isinstance(schema, dict):
        return {k: _with_refs(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_with_refs(v) for v in schema]
    return schema


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": _with_refs(schema)}}


def _responses(op: Operation, authenticated: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, schema in op.responses.items():
        out[str(status)] = {"description": _REASONS.get(status, "OK")}
        if schema is not None:
            out[str(status)]["content"] = {op.media_type: {"schema": _with_refs(schema)}}
    errors = set(op.errors)
    if authenticated:
        errors |= {401, 403, 502}
    if op.request is not None:
        errors |= {400, 415}
    for status in sorted(errors):
        out[str(status)] = {
            "description": _REASONS.get(status, "Error"),
            "content": _json(ERROR),
        }
    return out


def _operation(template: str, method: str, handler: type[web.RequestHandler], op: Operation) -> dict[str, Any]:
    func = getattr(handler, method)
    scopes = declared_scopes(func)
    if scopes is None and not is_public(func):
        raise ValueError(f"{handler.__name__}.{method} declares no permission")
    authenticated = scopes is not None
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", template)
    ]
    params += [{"name": n, "in": "query", "required": n in op.required_query, "schema": s} for n, s in op.query.items()]
    doc: dict[str, Any] = {
        "operationId": method + "_" + (re.sub(r"\W+", "_", template).strip("_") or "index"),
        "summary": op.summary,
        "responses": _responses(op, authenticated),
    }
    description = op.description
    if authenticated:
        doc["security"] = [{"hubToken": []}, {"hubOAuthCookie": []}]
        doc["x-hubforge-scopes"] = list(scopes or ())
        need = f"Needs one of the scopes: {', '.join(scopes)}." if scopes else "Needs a logged-in hub user."
        description = f"{description}\n\n{need}".strip()
    else:
        doc["security"] = []
    if description:
        doc["description"] = description
    if params:
        doc["parameters"] = params
    if op.request is not None:
        doc["requestBody"] = {"required": True, "content": _json(op.request)}
    return doc


def build_spec(
    routes: Iterable[tuple[str, type[web.RequestHandler]]],
    prefix: str,
    *,
    cookie_name: str,
    title: str = "hubforge governance",
    version: str = "1",
    description: str = "Approval requests for deployments and data access, behind JupyterHub auth.",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` (path template, handler class) served under ``prefix``."""
    paths: dict[str, Any] = {}
    for template, handler in routes:
        operations: dict[str, Operation] = getattr(handler, "operations", {})
        implemented = sorted(implemented_methods(handler))
        if sorted(operations) != implemented:
            raise ValueError(f"{handler.__name__}: documented {sorted(operations)} but implements {implemented}")
        paths["/" + template] = {m: _operation(template, m, handler, op) for m, op in operations.items()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": description,
        },
        "servers": [{"url": prefix}],
        "paths": paths,
        "components": {
            # A copy: the document is handed out, the schemas validate bodies.
            "schemas": copy.deepcopy(COMPONENTS),
            "securitySchemes": {
                "hubToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "'token <JupyterHub API token>'",
                },
                "hubOAuthCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": cookie_name,
                    "description": "Set by the hub OAuth login; writes also need X-XSRFToken.",
                },
            },
        },
    }
