"""The MLflow UI behind the hub: the view it opens on, and quiet answers for features that are off.

MLflow 3.17's UI refuses nothing quietly (the browser logs every 4xx), so a GET the
UI makes for a feature that is off for this person gets MLflow's own "off" answer
instead (:func:`feature_off`); and the UI's page sets the view it opens on
(:func:`with_ui_defaults`), which MLflow offers no server setting for. Pure
functions and ASGI helpers; :class:`~.gate.HubGate` applies them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import Message, Scope, Send

from .rules import route

__all__ = [
    "ACCOUNTS_OFF",
    "FEATURE_OFF",
    "UI_DEFAULTS",
    "feature_off",
    "rewriting",
    "unconditional",
    "with_ui_defaults",
]

# MLflow 3.17's UI chooses its view from ?workflowType= in the page's #-route, else from
# localStorage "mlflow.workflowType_v1" (its useLocalStorage keeps JSON under
# "<key>_v<version>"), else "genai": no environment variable or server-info field sets it.
# On a page served from localhost it also opens its assistant once on first load unless
# "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1" says that has happened. A person's own
# choice (the sidebar's GenAI / Model training switch) is kept: only unset keys are set.
UI_DEFAULTS: dict[str, Any] = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
}
# Per path under an API version: MLflow's answer when the feature is off, as the UI reads it.
FEATURE_OFF: dict[str, dict[str, Any]] = {
    # The assistant runs tools on the MLflow host. MLflow's answers with nothing set up and
    # no remote access: the UI then offers the assistant only on a page from localhost.
    "mlflow/assistant/config": {"providers": {}, "projects": {}, "remote_access_allowed": False},
    "mlflow/assistant/providers": {"providers": [], "resolved": None, "gateway_vendor_options": {}},
    # The deployments proxy: MLflow's answer when no deployments server is set up.
    "mlflow/gateway-proxy": {"endpoints": []},
}
# MLflow's basic-auth app, which is not run here (the hub keeps the accounts): MLflow itself
# answers 404, which the UI takes as "no accounts" as it takes an answer without a "user".
ACCOUNTS_OFF: dict[str, dict[str, Any]] = {"mlflow/users/current": {}}


def feature_off(method: str, relative: str, refused: bool) -> dict[str, Any] | None:
    """MLflow's "off" answer to this request, or None when it gets no such answer.

    ``relative`` is the path under the service prefix. Only GETs qualify: a refused
    feature (``refused``) answers "off" where MLflow has an "off" shape, and MLflow's
    account endpoints answer "off" to everyone. The answers hold no data of anybody's.
    """
    rest, versioned = route(relative)
    if method != "GET" or not versioned:
        return None
    if rest in ACCOUNTS_OFF:
        return ACCOUNTS_OFF[rest]
    return FEATURE_OFF.get(rest) if refused else None


def with_ui_defaults(page: bytes, defaults: Mapping[str, Any] = UI_DEFAULTS) -> bytes:
    """The UI's HTML page with a first script that sets each unset ``defaults`` key.

    Values are stored as JSON, as the UI stores them. A page without ``<head>`` is
    returned unchanged.
    """
    stored = json.dumps({key: json.dumps(value) for key, value in defaults.items()}).replace("<", "\\u003c")
    script = (
        "<script>(function(d){try{for(var k in d)if(localStorage.getItem(k)===null)"
        f"localStorage.setItem(k,d[k])}}catch(e){{}}}})({stored})</script>"
    )
    head, found, rest = page.partition(b"<head>")
    return head + found + script.encode() + rest if found else page


def unconditional(scope: Scope) -> Scope:
    """The request without ``If-None-Match``/``If-Modified-Since``: a 304 would skip the rewrite."""
    dropped = {b"if-none-match", b"if-modified-since"}
    return {**scope, "headers": [(k, v) for k, v in scope["headers"] if k not in dropped]}


def rewriting(send: Send, rewrite: Callable[[bytes], bytes]) -> Send:
    """A ``send`` that hands on a 200 HTML answer's body through ``rewrite``, in one piece."""
    held: list[Message] = []
    chunks: list[bytes] = []

    async def rewritten(message: Message) -> None:
        if message["type"] == "http.response.start":
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            if message["status"] == 200 and content_type.startswith(b"text/html"):
                held.append(message)
            else:
                await send(message)
        elif not held or message["type"] != "http.response.body":
            await send(message)
        else:
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                body = rewrite(b"".join(chunks))
                # The validators describe MLflow's file, not this page.
                stale = {b"content-length", b"etag", b"last-modified"}
                headers = [(k, v) for k, v in held[0]["headers"] if k not in stale]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**held[0], "headers": headers})
                await send({"type": "http.response.body", "body": body})

    return rewritten
