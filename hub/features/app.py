"""The features service: the feature catalog, for every hub user, behind JupyterHub auth.

``hubforge features apply`` writes the registry as ``catalog.json`` beside the feature
repository, in the platform's private data folder, which people's servers cannot read.
This service serves it: ``GET api/catalog`` (the whole catalog, with an ETag, so a
widget's refresh costs a 304) and ``GET api/search?q=...`` (matching objects, best
first, :meth:`~hubforge.features.catalog.Catalog.search`). It reads the file again when
it changes, so a new apply shows without a restart. Tokens only (the widgets, Voila apps
and scripts call it with the server's or a person's token); any hub user with access to
the service may browse: the catalog is metadata, never data. Data is ``POST api/online``
(:mod:`.online`): the online store's values for entity rows, and ``POST api/historical``
(:mod:`.historical`): the offline store's values as of each row's time, for training
sets. Restricted views are read only under an active data-access grant, and every such
read is an audit event (:mod:`.access`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from jupyterhub.services.auth import HubAuth, HubAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets.config import catch_config_error

from hubforge import __version__
from hubforge.config import load_config
from hubforge.contract import GOVERNANCE_URL_ENV
from hubforge.errors import Forbidden, HubforgeError, Refusal, Unavailable, http_answer
from hubforge.events.spool import open_spool, platform_spool_dir
from hubforge.features.apply import features_dir
from hubforge.features.catalog import CATALOG_FILE, KINDS, Catalog
from hubforge.features.catalog import load as load_catalog
from hubforge.features.repo import FeaturesError, StoreUnreachable
from hubforge.hub.service_app import JSON_TYPE, HubServiceApp, JSONErrorHandler, make_hub_auth

from .access import DataAccess, Grant, ReadAudit, restricted_views
from .historical import HistoricalQuery, HistoricalReader, parse_historical
from .online import OnlineQuery, OnlineReader, parse

__all__ = ["CatalogFile", "FeaturesService", "main", "make_app"]

SERVICE = "features"
#: The longest search query read (a person types a few words).
MAX_QUERY = 200
MAX_LIMIT = 200
#: The largest request body of an online read: a thousand entity rows.
MAX_ONLINE_BODY = 256 * 1024
#: ... of a historical read: ten thousand rows of a few keys and a time (about 100 bytes
#: each; a kernel sends a larger training set in parts).
MAX_HISTORICAL_BODY = 4 * 1024 * 1024
#: The largest body the server reads at all: each route refuses more than its own (413).
MAX_BODY = max(MAX_ONLINE_BODY, MAX_HISTORICAL_BODY)


@dataclass(frozen=True)
class Loaded:
    """The catalog as last read: its file's identity, its bytes, its ETag, its search."""

    stamp: tuple[int, int]
    body: bytes
    etag: str
    catalog: Catalog


class CatalogFile:
    """``catalog.json`` at ``path``, read again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: Loaded | None = None
        self._lock = threading.Lock()

    def current(self) -> Loaded:
        """The catalog now; a HubforgeError (one line) when there is none or it is unreadable."""
        try:
            info = self.path.stat()
        except OSError:
            raise HubforgeError("the feature catalog is not there yet: `hubforge features apply` writes it") from None
        stamp = (info.st_mtime_ns, info.st_size)
        with self._lock:
            if self._loaded is None or self._loaded.stamp != stamp:
                catalog = load_catalog(self.path)
                body = json.dumps(catalog.data).encode()
                self._loaded = Loaded(stamp, body, f'"{hashlib.sha256(body).hexdigest()[:32]}"', catalog)
            return self._loaded


def _hit(item: Any) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "name": item.name,
        "description": item.description,
        "owner": item.owner,
        "tags": dict(item.tags),
        "restricted": item.restricted,
    }


class FeaturesHandler(HubAuthenticated, JSONErrorHandler):
    """Base: hub token auth, JSON errors (never a traceback), the catalog file."""

    internal_error = "the features service failed; its log says why"

    @property
    def hub_auth(self) -> HubAuth:
        return self.settings["hub_auth"]

    @property
    def catalog_file(self) -> CatalogFile:
        return self.settings["catalog_file"]

    def loaded(self) -> Loaded:
        try:
            return self.catalog_file.current()
        except HubforgeError as exc:
            raise web.HTTPError(503, "%s", str(exc)) from None

    @property
    def audit(self) -> ReadAudit:
        return self.settings["audit"]

    async def authorize(self, catalog: Catalog, views: list[str], **read: Any) -> dict[str, Grant]:
        """The caller's grants for the restricted ``views`` of a read (``read``: its mode, rows
        and features, for the audit event); 403 saying how to ask when one is missing, 503
        when governance cannot say. A refusal is recorded; if even that fails, it is logged."""
        if not views:
            return {}
        user, project = self.current_user["name"], str(catalog.project.get("name", ""))
        kind = str(self.current_user.get("kind", "user"))
        if kind != "user":  # a service named like a person is not that person, in the trail either
            user = f"{kind}:{user}"
        try:
            if kind != "user":
                raise Forbidden("restricted data is read by people under a grant of their own, never by a service")
            return await self.settings["access"].require(user, project, views)
        except Forbidden as exc:
            try:
                await self.audit.record(user, project, views, "denied", client=self.request.remote_ip or "",
                                        reason=str(exc), **read)  # fmt: skip
            except Unavailable:
                self.log.error("A refused read of %s by %s is not in the audit trail", views, user)
            raise web.HTTPError(403, "%s", str(exc)) from None
        except Unavailable as exc:
            raise web.HTTPError(503, "%s", str(exc)) from None

    async def recorded(self, catalog: Catalog, views: list[str], grants: dict[str, Grant], outcome: str,
                       reason: str = "", **read: Any) -> None:  # fmt: skip
        """Record a read of the restricted ``views`` before its data leaves (503 if it cannot be)."""
        if not views:
            return
        try:
            await self.audit.record(self.current_user["name"], str(catalog.project.get("name", "")), views, outcome,
                                    client=self.request.remote_ip or "", grants=grants, reason=reason,
                                    **read)  # fmt: skip
        except Unavailable as exc:
            raise web.HTTPError(503, "%s", str(exc)) from None


class HealthHandler(FeaturesHandler):
    """``GET api/health``: 200 while the service runs (no auth: the hub's check)."""

    def get(self) -> None:
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json.dumps({"status": "ok", "catalog": self.catalog_file.path.is_file()}))


class CatalogHandler(FeaturesHandler):
    """``GET api/catalog``: the whole catalog (304 when the ETag still matches)."""

    @web.authenticated
    def get(self) -> None:
        loaded = self.loaded()
        self.settings["online"].warm()  # somebody browses the features: a read of values follows
        self.set_header("ETag", loaded.etag)
        self.set_header("Cache-Control", "no-cache")
        if loaded.etag in [tag.strip() for tag in self.request.headers.get("If-None-Match", "").split(",")]:
            self.set_status(304)
            self.finish()
            return
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(loaded.body)


class SearchHandler(FeaturesHandler):
    """``GET api/search?q=WORDS[&kind=feature_view...][&limit=N]``: matching objects, best first."""

    @web.authenticated
    def get(self) -> None:
        query = self.get_query_argument("q", "")
        if len(query) > MAX_QUERY:
            raise web.HTTPError(400, "q: at most %d characters", MAX_QUERY)
        kinds = self.get_query_arguments("kind")
        unknown = sorted(set(kinds) - set(KINDS.values()))
        if unknown:
            raise web.HTTPError(400, "kind: %s is none of %s", unknown[0], ", ".join(sorted(KINDS.values())))
        raw = self.get_query_argument("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise web.HTTPError(400, "limit: a whole number from 1 to %d", MAX_LIMIT)
        hits = self.loaded().catalog.search(query, kinds or None, int(raw))
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json.dumps({"query": query, "hits": [_hit(hit.item) for hit in hits]}))


class ReadHandler(FeaturesHandler):
    """Base of the data reads, online and historical: the body parsed against the catalog,
    the grants of its restricted views checked, then the read, recorded before its data
    leaves. A restricted view is never read without both."""

    #: ``online`` or ``historical``: the audit event's mode, and the settings key of the reader.
    mode: ClassVar[str]
    #: The largest body it reads (bytes).
    max_body: ClassVar[int]

    def parse(self, body: Any, catalog: Catalog) -> OnlineQuery | HistoricalQuery:
        raise NotImplementedError

    @web.authenticated
    async def post(self) -> None:
        if len(self.request.body) > self.max_body:
            raise web.HTTPError(413, "the body is over %d bytes: send fewer entity rows at a time", self.max_body)
        try:
            body = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON") from None
        catalog = self.loaded().catalog
        self.settings[self.mode].warm()  # opened while the grants are checked
        try:
            query = self.parse(body, catalog)
        except Refusal as exc:
            status, message = http_answer(exc)
            raise web.HTTPError(status, "%s", message) from None
        views = restricted_views(catalog, query.views)
        features = f"service:{query.service}" if query.service else ",".join(query.features)
        read: dict[str, Any] = {"mode": self.mode, "rows": len(query.rows), "features": features}
        grants = await self.authorize(catalog, views, **read)
        try:
            values = await self.settings[self.mode].read(query)
        except FeaturesError as exc:
            await self.recorded(catalog, views, grants, "failure", reason=str(exc), **read)
            if isinstance(exc, StoreUnreachable):  # the store's fault, not the request's: try again later
                self.log.error("%s read failed: %s", self.mode, exc)
                raise web.HTTPError(503, "%s", str(exc)) from None
            raise web.HTTPError(400, "%s", str(exc)) from None
        await self.recorded(catalog, views, grants, "success", **read)
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(values)


class OnlineHandler(ReadHandler):
    """``POST api/online``: feature values for entity rows (:mod:`.online`)."""

    mode = "online"
    max_body = MAX_ONLINE_BODY

    def parse(self, body: Any, catalog: Catalog) -> OnlineQuery:
        return parse(body, catalog)


class HistoricalHandler(ReadHandler):
    """``POST api/historical``: feature values as of each entity row's time (:mod:`.historical`)."""

    mode = "historical"
    max_body = MAX_HISTORICAL_BODY

    def parse(self, body: Any, catalog: Catalog) -> HistoricalQuery:
        return parse_historical(body, catalog)


class NotFoundHandler(FeaturesHandler):
    """Any other path or method: a JSON 404."""

    def prepare(self) -> None:
        raise web.HTTPError(404, "no such path in the features service")


ROUTES: list[tuple[str, type[web.RequestHandler]]] = [
    ("api/health", HealthHandler),
    ("api/catalog", CatalogHandler),
    ("api/search", SearchHandler),
    ("api/online", OnlineHandler),
    ("api/historical", HistoricalHandler),
]


def make_app(
    catalog_path: Path,
    prefix: str,
    hub_auth: HubAuth,
    access: DataAccess | None = None,
    audit: ReadAudit | None = None,
    **settings: Any,
) -> web.Application:
    """The service's tornado application under ``prefix``; without ``access`` or ``audit``
    restricted views are refused (no grant can be checked, no read recorded)."""
    handlers = [(url_path_join(prefix, path), handler) for path, handler in ROUTES]
    return web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        hub_auth=hub_auth,
        catalog_file=CatalogFile(catalog_path),
        online=OnlineReader(catalog_path.parent),
        historical=HistoricalReader(catalog_path.parent),
        access=access or DataAccess(None, ""),
        audit=audit or ReadAudit(None),
        xsrf_cookies=False,  # tokens only: no cookie is read
        **settings,
    )


class FeaturesService(HubServiceApp):
    """The features service process."""

    name = "hubforge-features"
    description = "The hubforge features service: the feature catalog behind JupyterHub auth."
    version = __version__
    service_name = SERVICE
    aliases: ClassVar[dict[str, Any]] = {"log-level": "Application.log_level"}  # type: ignore[misc]

    web_app: web.Application

    @catch_config_error
    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        self.init_logging()
        self.init_address()
        cfg = load_config()
        self.catalog_path = features_dir(cfg) / CATALOG_FILE
        # Grants are asked of governance as this service's own hub identity (custom:grants:read).
        governance = os.environ.get(GOVERNANCE_URL_ENV) or None
        if governance is None:
            self.log.warning("No governance service (%s unset): restricted feature views are refused to everyone",
                             GOVERNANCE_URL_ENV)  # fmt: skip
        access = DataAccess(governance, os.environ.get("JUPYTERHUB_API_TOKEN", ""))
        audit = ReadAudit(open_spool(platform_spool_dir(cfg.data_dir, SERVICE), SERVICE))
        self.web_app = make_app(self.catalog_path, self.service_prefix, make_hub_auth(SERVICE, self.service_prefix),
                                access=access, audit=audit)  # fmt: skip

    def start(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = HTTPServer(self.web_app, xheaders=True, max_body_size=MAX_BODY)
        server.listen(self.port, self.ip)
        self.log.info("Features service listening on http://%s:%d%s (catalog %s)", self.ip, self.port,
                      self.service_prefix, self.catalog_path)  # fmt: skip
        await self.until_signalled()
        self.log.info("Features service stopping")
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the features service; a configuration problem exits 1 with one line."""
    FeaturesService.main(argv)
