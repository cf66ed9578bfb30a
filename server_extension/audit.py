"""What a person's server records in the audit trail: files, kernels, and its kernels' cells.

The server observes through jupyter-server's own events, as it emits them after each
action succeeds: its contents service (a file saved, copied, renamed, deleted; a new
file is a save) and its kernel manager (a kernel started, shut down, restarted).
Three file actions have no event of jupyter-server's of their own, and are observed on
the requests that do them, as jupyter-server routed and parsed them (the handler and
its path argument), in the request log hook: opens (a contents ``GET`` of a file with
its content; the contents service's own "get" events also fire for its internal reads),
downloads (``/files/...``, ``/nbconvert/...?download=true``) and uploads (a contents
``PUT`` of base64 or chunked content, which the contents service records as a save).
Those carry the client's address and the outcome, refusals included.

All of it goes into the server's spool (``<audit dir>/server/``), and each kernel
keeps its own (``kernel-<id>/``, see :mod:`.kernel.audit`); the
:class:`~.forward.AuditForwarder` delivers every spool under the audit dir to the
governance service with the server's hub token. The trail keeps them as reported by
this person's server: the user is always the server's owner.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.base.handlers import AuthenticatedFileHandler
from jupyter_server.files.handlers import FilesHandler
from jupyter_server.nbconvert.handlers import NbconvertFileHandler
from jupyter_server.services.contents.handlers import ContentsHandler
from traitlets import Bool, Float, Unicode, default
from traitlets.config import LoggingConfigurable

from hubforge.contract import AUDIT_DIR_ENV, AUDIT_URL_ENV, switched_off
from hubforge.events.spool import EventSpool

from .forward import AuditForwarder

__all__ = [
    "CONTENTS_SCHEMA",
    "KERNEL_SCHEMA",
    "HubforgeAudit",
    "ServerAudit",
    "load_audit",
]

CONTENTS_SCHEMA = "https://events.hubforge.dev/server/contents/v1"
KERNEL_SCHEMA = "https://events.hubforge.dev/server/kernel/v1"
JUPYTER_CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
JUPYTER_KERNELS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
#: jupyter-server's contents actions -> ours. Its "get" is left out: the contents service emits
#: it for its own reads too (after every save and rename); an open is a client's GET.
CONTENTS_ACTIONS = {"save": "save", "create": "create", "copy": "copy", "rename": "rename", "delete": "delete",
                    "upload": "upload"}  # fmt: skip
KERNEL_ACTIONS = {"start": "start", "shutdown": "stop", "restart": "restart"}


class HubforgeAudit(LoggingConfigurable):
    """Settings of the server's audit events (``c.HubforgeAudit.*`` in the server's config)."""

    enabled = Bool(True, help="Record file, kernel and cell actions in the platform's audit trail.").tag(config=True)

    audit_dir = Unicode(
        help="Where the server and its kernels spool audit events until the governance service has them "
        "(HUBFORGE_AUDIT_DIR). Default: <jupyter data dir>/hubforge/audit/<server name>, in the person's home.",
    ).tag(config=True)

    @default("audit_dir")
    def _default_audit_dir(self) -> str:
        named = os.environ.get("JUPYTERHUB_SERVER_NAME") or "default"
        return os.environ.get(AUDIT_DIR_ENV) or str(Path(jupyter_data_dir()) / "hubforge" / "audit" / named)

    url = Unicode(
        help="The governance service's audit API to forward to (HUBFORGE_AUDIT_URL, set by the hub). "
        "Empty: events stay in the spools.",
    ).tag(config=True)

    @default("url")
    def _default_url(self) -> str:
        return os.environ.get(AUDIT_URL_ENV, "")

    forward_interval = Float(1.0, help="Seconds between two deliveries of the spools.").tag(config=True)


class ServerAudit:
    """The server's spool and its observers; ``user`` owns the server ``server``."""

    def __init__(self, spool: EventSpool, user: str, server: str, root_dir: str) -> None:
        self.spool = spool
        self.user = user
        self.origin = {"observer": "server", "server": f"{user}/{server}"}
        self.root_dir = root_dir
        self.forwarder: AuditForwarder | None = None

    def close(self) -> None:
        """Write what is spooled, and deliver it if the service is there (else: at the next start)."""
        self.spool.close()
        if self.forwarder is not None:
            self.forwarder.stop()

    def record(self, schema: str, action: str, kind: str, ident: str, outcome: str = "success",
               client: str | None = None, **fields: Any) -> None:  # fmt: skip
        """Spool one event of this server."""
        origin = {**self.origin, "client_address": client} if client else self.origin
        event = {"user": self.user, "action": action, "resource": {"type": kind, "id": ident},
                 "outcome": outcome, "origin": origin, **fields}  # fmt: skip
        self.spool.emit(schema, event)

    async def on_contents(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        """jupyter-server's contents event -> a file event."""
        action = CONTENTS_ACTIONS.get(data.get("action", ""))
        path = str(data.get("path", "")).strip("/")
        if action is None:
            return
        extra = {"source_path": str(data["source_path"]).strip("/")} if data.get("source_path") else {}
        self.record(CONTENTS_SCHEMA, action, "file", path, path=path, **extra)

    async def on_kernel(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        """jupyter-server's kernel action -> a kernel event (interrupts are not recorded)."""
        action = KERNEL_ACTIONS.get(data.get("action", ""))
        if action is None:
            return
        kernel_id = str(data.get("kernel_id", ""))
        outcome = "success" if data.get("status") == "success" else "failure"
        self.record(KERNEL_SCHEMA, action, "kernel", kernel_id or "?", outcome,
                    kernel_id=kernel_id, kernel_name=str(data.get("kernel_name", "")))  # fmt: skip

    def on_request(self, handler: Any) -> None:
        """After each request: a file opened, downloaded or uploaded, as jupyter-server routed it."""
        action = file_action(handler)
        if action is None:
            return
        path = str(handler.path_kwargs.get("path") or (handler.path_args or [""])[0]).strip("/")
        if action == "open" and os.path.isdir(os.path.join(self.root_dir, path)):
            return  # a folder listed
        status = handler.get_status()
        outcome = "success" if status < 400 else ("denied" if status in (401, 403) else "failure")
        self.record(CONTENTS_SCHEMA, action, "file", path, outcome, client=handler.request.remote_ip, path=path)


def file_action(handler: Any) -> str | None:
    """``open``, ``download`` or ``upload`` when ``handler`` (a finished request's) read a
    file's content for the person's browser or brought one from it; None otherwise."""
    request = handler.request
    if request.method == "GET":
        if isinstance(handler, ContentsHandler):  # content=0: JupyterLab checking a file changed
            return "open" if handler.get_query_argument("content", "1") != "0" else None
        if isinstance(handler, AuthenticatedFileHandler | FilesHandler):
            return "download"
        if isinstance(handler, NbconvertFileHandler) and handler.get_argument("download", "").lower() == "true":
            return "download"
    elif request.method == "PUT" and isinstance(handler, ContentsHandler):
        # JupyterLab uploads as base64 or in chunks; a notebook or a text file saved is JSON or text.
        head, tail = request.body[:256], request.body[-64:]
        if b'"format":"base64"' in head.replace(b" ", b"") or b'"chunk":' in tail.replace(b" ", b""):
            return "upload"
    return None


def _logging_then(original: Callable[[Any], None] | None, then: Callable[[Any], None]) -> Callable[[Any], None]:
    def log_function(handler: Any) -> None:
        if original is not None:
            original(handler)
        try:
            then(handler)
        except Exception:  # the audit must never break a request's logging
            handler.log.warning("hubforge: the request was not recorded in the audit trail", exc_info=True)

    return log_function


def load_audit(serverapp: Any) -> ServerAudit | None:
    """Observe ``serverapp``'s actions into its spool and start forwarding; the observer, or
    None when the audit is off."""
    settings = HubforgeAudit(parent=serverapp)
    if not settings.enabled:
        return None
    root = Path(settings.audit_dir)
    # Kernels, terminals and papermill runs of this server inherit it: their cells' spools go under it.
    os.environ[AUDIT_DIR_ENV] = str(root)
    spool = EventSpool(root / "server", "server")
    user = os.environ.get("JUPYTERHUB_USER") or os.environ.get("USER", "")
    server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
    audit = ServerAudit(spool, user, server, os.path.abspath(serverapp.root_dir))
    events = serverapp.event_logger
    events.add_listener(schema_id=JUPYTER_CONTENTS, listener=audit.on_contents)
    events.add_listener(schema_id=JUPYTER_KERNELS, listener=audit.on_kernel)
    app_settings = serverapp.web_app.settings
    app_settings["log_function"] = _logging_then(app_settings.get("log_function"), audit.on_request)
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if settings.url and token and not switched_off(settings.url):
        audit.forwarder = AuditForwarder(root, settings.url, token, server, interval=settings.forward_interval)
        audit.forwarder.start()
    serverapp.log.info("hubforge: audit events spooled in %s, forwarded to %s", root, settings.url or "nowhere")
    return audit
