"""The apps service: notebooks published as Voila apps, and the gallery where people open them.

JupyterHub starts it as a managed service (``python -m hubforge.hub.apps``). Its API
(``api/apps...``, in ``api/openapi.json``) publishes a notebook as ``<owner>/<name>``
(a frozen copy, :mod:`.store`), lists and searches the apps a person may open, and lets
the owner change, roll back or unpublish one. ``hubforge apps`` (:mod:`.cli`) is its
command line. The gallery (the service's page, after a hub login) shows the apps shared
with the viewer as cards: title, description, owner, version, last update and
thumbnail, with a search box. An app nobody shared with the viewer is the same 404 as
a missing one, on the page and in the API.

Who may see an app depends on the viewer's hub groups, which the service asks the hub
with its own token (a server's token does not carry them), kept for a minute.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from jupyterhub.services.auth import HubOAuth
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Unicode
from traitlets.config import catch_config_error

from hubforge import __version__, proxies
from hubforge.config import PlatformConfig, load_config
from hubforge.errors import Refusal
from hubforge.events.record import record as record_event
from hubforge.events.spool import open_spool, platform_spool_dir
from hubforge.hub.governance.api import APIHandler
from hubforge.hub.governance.app import load_cookie_secret
from hubforge.hub.governance.auth import needs_scope, public
from hubforge.hub.governance.handlers import HealthHandler, NotFoundHandler, OAuthCallbackHandler, OpenAPIHandler
from hubforge.hub.governance.openapi import Operation, build_spec, path_pattern
from hubforge.hub.governance.report_html import esc
from hubforge.hub.service_app import HubServiceApp, make_hub_oauth

from .notebooks import MAX_NOTEBOOK, inspect
from .store import MAX_DESCRIPTION, MAX_SHARES, MAX_TITLE, AppRecord, AppStore

__all__ = ["AppsService", "main", "make_app"]

SERVICE = "apps"
#: Seconds a person's hub groups are kept.
GROUPS_MAX_AGE = 60
#: The largest body read: a notebook with its outputs, as JSON inside the request.
MAX_BODY_SIZE = 2 * MAX_NOTEBOOK
NOT_FOUND = "no such app"
#: The gallery: no script; images from the service itself (thumbnails).
GALLERY_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: A thumbnail (a notebook's own image): never a document that runs anything.
IMAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"

_NAME = {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"}
_SHARE = {"type": "array", "maxItems": MAX_SHARES, "items": {"type": "string", "minLength": 1, "maxLength": 261}}
_PARAMETER = {
    "type": "object",
    "properties": {n: {"type": "string"} for n in ("name", "type", "default", "help")},
}
APP = {
    "type": "object",
    "required": ["owner", "name", "title", "description", "version", "published", "updated", "parameters"],
    "properties": {
        "owner": {"type": "string"},
        "name": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "version": {"type": ["integer", "null"]},
        "published": {"type": "boolean"},
        "updated": {"type": "string", "format": "date-time"},
        "parameters": {"type": "array", "items": _PARAMETER},
        "kernel": {"type": ["string", "null"]},
        "thumbnail": {"type": "boolean"},
        "shared_with": {"type": "array", "items": {"type": "string"}, "description": "The owner's view only."},
    },
}
APPS = {"type": "object", "required": ["apps"], "properties": {"apps": {"type": "array", "items": APP}}}
VERSIONS = {
    "type": "object",
    "required": ["versions"],
    "properties": {
        "versions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "version": {"type": "integer"},
                    "digest": {"type": "string"},
                    "size": {"type": "integer"},
                    "kernel": {"type": "string"},
                    "parameters": {"type": "array", "items": _PARAMETER},
                    "thumbnail": {"type": "boolean"},
                    "published": {"type": "string", "format": "date-time"},
                },
            },
        }
    },
}
PUBLISH = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "notebook"],
    "properties": {
        "name": _NAME,
        "notebook": {"type": "object", "description": "The notebook's content (nbformat 4 JSON)."},
        "title": {"type": "string", "maxLength": MAX_TITLE},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "share": {**_SHARE, "description": "group:NAME, user:NAME, or a group's NAME; left out: kept."},
    },
}
CHANGE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "title": {"type": "string", "maxLength": MAX_TITLE},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "share": _SHARE,
    },
}
ROLLBACK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version"],
    "properties": {"version": {"type": "integer", "minimum": 1}},
}


def available_kernels() -> list[str]:
    """The kernels apps can run here: those of the platform's environment."""
    from jupyter_client.kernelspec import KernelSpecManager

    return sorted(KernelSpecManager().find_kernel_specs())


class Groups:
    """People's hub groups, asked with the service's token and kept ``max_age`` seconds."""

    def __init__(self, hub_auth: HubOAuth, max_age: float = GROUPS_MAX_AGE) -> None:
        self.hub_auth, self.max_age = hub_auth, max_age
        self._known: dict[str, tuple[float, frozenset[str]]] = {}

    async def of(self, name: str) -> frozenset[str]:
        known = self._known.get(name)
        if known is not None and time.monotonic() - known[0] < self.max_age:
            return known[1]
        auth = self.hub_auth
        url = url_path_join(auth.api_url, "users", quote(name, safe=""))
        try:
            model = await auth._api_request("GET", url, headers={"Authorization": f"token {auth.api_token}"})
        except web.HTTPError as exc:
            raise web.HTTPError(502, "cannot ask the hub for the caller's groups; try again later") from exc
        groups = frozenset(str(g) for g in (model or {}).get("groups") or ())
        self._known[name] = (time.monotonic(), groups)
        return groups


class AppsHandler(APIHandler):
    """Base of the apps API: the store, the caller's groups, the service's refusals."""

    max_body: ClassVar[int] = MAX_BODY_SIZE
    store_words: ClassVar[str] = "the apps store"
    not_found_message: ClassVar[str] = NOT_FOUND

    @property
    def apps(self) -> AppStore:
        return self.settings["apps"]

    async def viewer_groups(self) -> frozenset[str]:
        return await self.settings["groups"].of(self.user_name)

    @property
    def is_admin(self) -> bool:
        return bool(self.current_user.get("admin"))

    def audit(self, action: str, owner: str, name: str, record: AppRecord | None = None) -> None:
        """The change in the audit trail (``apps/app/v1``), as the caller's."""
        shared = ",".join(record.shares) if record is not None else None
        version = record.current.version if record is not None and record.current is not None else None
        record_event(self.settings.get("audit"), "apps/app", SERVICE, user=self.user_name, action=action,
                     resource=("app", f"{owner}/{name}"), version=version, shared_with=shared)  # fmt: skip

    async def record(self, owner: str, name: str) -> AppRecord:
        """The app if the caller may see it; 404 otherwise."""
        groups = await self.viewer_groups()
        return await self.call_store(self.apps.get, owner, name, self.user_name, groups)


class AppsListHandler(AppsHandler):
    """The apps a person may open, and publishing."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "The published apps shared with the caller (and their own), newest first",
            {200: APPS},
            description="``q``: only apps whose title, name, owner or description holds every word. "
            "``mine=1``: the caller's own apps, published or not.",
            query={"q": {"type": "string", "maxLength": 200}, "mine": {"type": "string", "enum": ["", "0", "1"]}},
        ),
        "post": Operation(
            "Publish a notebook as the caller's app <name>: its first version, or the next",
            {201: APP},
            request=PUBLISH,
            description="The notebook is checked (nbformat 4, a kernel that exists here) and frozen; "
            "its parameters cell and first image become the app's parameters and thumbnail.",
            errors=(400, 413, 415),
        ),
    }

    @needs_scope()
    async def get(self) -> None:
        query = self.get_query_argument("q", "")[:200]
        mine = self.query_choice("mine", ("", "0", "1")) == "1"
        if mine:
            found = await self.call_store(self.apps.mine, self.user_name)
        else:
            groups = await self.viewer_groups()
            found = await self.call_store(self.apps.gallery, self.user_name, groups, query)
        self.write_json({"apps": [app.as_json(for_owner=app.owner == self.user_name) for app in found]})

    @needs_scope("custom:experiments:write")
    async def post(self) -> None:
        body = self.json_body()
        kernels = self.settings["kernels"]
        try:
            checked = await asyncio.to_thread(inspect, body["notebook"], kernels)
        except Refusal as exc:
            raise self.refused(exc) from None
        record = await self.call_store(
            self.apps.publish,
            self.user_name,
            body["name"],
            checked,
            title=body.get("title"),
            description=body.get("description"),
            share=body.get("share"),
        )
        self.log.info(
            "%s published %s version %s", self.user_name, record.key, record.current and record.current.version
        )
        self.audit("publish", record.owner, record.name, record)
        self.set_header("Location", url_path_join(self.settings["service_prefix"], "api/apps", record.key))
        self.write_json(record.as_json(for_owner=True), 201)


class AppHandler(AppsHandler):
    """One app: read it, change it (owner), unpublish it (owner, or a platform admin)."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The app, if the caller may open it", {200: APP}),
        "patch": Operation(
            "Change the app's title, description or sharing (its owner)", {200: APP}, request=CHANGE, errors=(400, 403)
        ),
        "delete": Operation(
            "Unpublish the app (its owner, or a platform admin); its versions stay on record",
            {204: None},
            errors=(403,),
        ),
    }

    @needs_scope()
    async def get(self, owner: str, name: str) -> None:
        record = await self.record(owner, name)
        self.write_json(record.as_json(for_owner=record.owner == self.user_name))

    @needs_scope()
    async def patch(self, owner: str, name: str) -> None:
        body = self.json_body()
        await self.record(owner, name)  # 404 before 403: nothing said of apps one cannot see
        changes = {key: body.get(key) for key in ("title", "description", "share")}
        record = await self.call_store(self.apps.update, owner, name, self.user_name, **changes)
        self.audit("share", owner, name, record)
        self.write_json(record.as_json(for_owner=True))

    @needs_scope()
    async def delete(self, owner: str, name: str) -> None:
        if not self.is_admin:
            await self.record(owner, name)
        await self.call_store(self.apps.unpublish, owner, name, self.user_name, admin=self.is_admin)
        self.log.info("%s unpublished %s/%s", self.user_name, owner, name)
        self.audit("unpublish", owner, name)
        self.set_status(204)
        self.finish()


class VersionsHandler(AppsHandler):
    """An app's versions (its owner)."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Every version of the app, newest first (its owner)", {200: VERSIONS}, errors=(403,))
    }

    @needs_scope()
    async def get(self, owner: str, name: str) -> None:
        record = await self.record(owner, name)
        if record.owner != self.user_name:
            raise web.HTTPError(403, f"only {owner} sees the versions of {owner}/{name}")
        history = await self.call_store(self.apps.history, owner, name)
        self.write_json({"versions": [version.as_json() for version in history]})


class RollbackHandler(AppsHandler):
    """Point an app at one of its versions again (its owner)."""

    operations: ClassVar[dict[str, Operation]] = {
        "post": Operation(
            "Make one of the app's versions its current one again (its owner)",
            {200: APP},
            request=ROLLBACK,
            errors=(400, 403),
        )
    }

    @needs_scope()
    async def post(self, owner: str, name: str) -> None:
        body = self.json_body()
        await self.record(owner, name)
        record = await self.call_store(self.apps.rollback, owner, name, self.user_name, body["version"])
        self.log.info("%s rolled %s back to version %s", self.user_name, record.key, body["version"])
        self.audit("rollback", owner, name, record)
        self.write_json(record.as_json(for_owner=True))


class NotebookHandler(AppsHandler):
    """The frozen notebook of an app's current version (what Voila renders for the viewer)."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "The notebook of the app's current version (nbformat 4 JSON)",
            {200: {"type": "object"}},
            description="``ETag`` is the notebook's sha256.",
        )
    }

    @needs_scope()
    async def get(self, owner: str, name: str) -> None:
        record = await self.record(owner, name)
        if record.current is None:
            raise web.HTTPError(404, NOT_FOUND)
        body = await asyncio.to_thread(self.apps.notebook_path(record.current).read_bytes)
        self.set_header("ETag", f'"{record.current.digest}"')
        self.set_header("X-Hubforge-App-Version", str(record.current.version))
        self.finish(body)


class ThumbnailHandler(AppsHandler):
    """An app's thumbnail: its notebook's first image, else a card drawn from its title."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The app's thumbnail (PNG or SVG)", {200: {"type": "string"}}, media_type="image/png")
    }

    @needs_scope()
    async def get(self, owner: str, name: str) -> None:
        record = await self.record(owner, name)
        image = await asyncio.to_thread(self.apps.thumbnail, record.current) if record.current else None
        media, body = image if image is not None else ("image/svg+xml", drawn_card(record).encode())
        self.set_header("Content-Type", media)
        self.set_header("Content-Security-Policy", IMAGE_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "private, max-age=60")
        self.finish(body)


_CARD_COLOURS = ("#4e79a7", "#59a14f", "#e15759", "#f28e2b", "#76b7b2", "#b07aa1", "#9c755f")


def drawn_card(record: AppRecord) -> str:
    """An SVG card with the app's initial, coloured by its name: the thumbnail of an app
    whose notebook shows no image."""
    colour = _CARD_COLOURS[int(hashlib.sha256(record.key.encode()).hexdigest(), 16) % len(_CARD_COLOURS)]
    initial = esc((record.title or record.name)[:1].upper())
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="180" viewBox="0 0 320 180">'
        f'<rect width="320" height="180" fill="{colour}"/>'
        '<text x="160" y="112" font-family="sans-serif" font-size="72" fill="#fff" text-anchor="middle">'
        f"{initial}</text></svg>"
    )


_GALLERY_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#1f2937;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:center}
header h1{font-size:20px;margin:0;flex:1}
form{display:flex;gap:8px}input[type=search]{padding:6px 10px;width:260px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:16px;padding:24px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;overflow:hidden;display:flex;flex-direction:column}
.card img{width:100%;height:146px;object-fit:cover;background:#ddd}
.card div{padding:12px;flex:1}.card h2{font-size:16px;margin:0 0 6px}
.card p{margin:0 0 8px;font-size:14px;color:#444}.meta{font-size:12px;color:#666}
.card a.open{display:block;text-align:center;padding:10px;background:#2563eb;color:#fff;text-decoration:none}
.empty{padding:24px}
"""


def gallery_html(prefix: str, viewer: str, apps: list[AppRecord], query: str) -> str:
    """The gallery page: a card per app (every value escaped), a search form, no script."""
    cards = []
    for app in apps:
        base = url_path_join(prefix, "api/apps", quote(app.owner, safe=""), app.name)
        version = app.current.version if app.current else "-"
        cards.append(
            f'<article class="card" data-app="{esc(app.key)}">'
            f'<img src="{esc(base)}/thumbnail" alt="" loading="lazy">'
            f"<div><h2>{esc(app.title)}</h2><p>{esc(app.description)}</p>"
            f'<p class="meta">by {esc(app.owner)} · version {esc(version)} · '
            f'updated <time datetime="{esc(app.updated.isoformat())}">{esc(app.updated.strftime("%Y-%m-%d %H:%M"))}'
            " UTC</time></p></div>"
            f'<a class="open" href="{esc(url_path_join(prefix, "open", quote(app.owner, safe=""), app.name))}">'
            "Open</a></article>"
        )
    if not cards:
        said = f"No app matches “{esc(query)}”." if query else "No app is shared with you yet."
        cards.append(f'<p class="empty">{said}</p>')
    search = f"{prefix}?{urlencode({'q': query})}" if query else prefix
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{GALLERY_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Apps · hubforge</title>\n<style>{_GALLERY_STYLE}</style>\n</head>\n<body>\n"
        f'<header><h1>Apps</h1><span>{esc(viewer)}</span><form method="get" action="{esc(prefix)}" role="search">'
        f'<input type="search" name="q" value="{esc(query)}" placeholder="Search apps" aria-label="Search apps">'
        f'<button type="submit">Search</button></form></header>\n'
        f'<main data-search="{esc(search)}">\n' + "\n".join(cards) + "\n</main>\n</body>\n</html>\n"
    )


class GalleryHandler(AppsHandler):
    """The gallery: the apps shared with the viewer, as cards."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "The gallery page: the apps shared with the viewer, with search",
            {200: {"type": "string"}, 302: None},
            description="An HTML page without script. Browsers without a session are sent to the hub login.",
            query={"q": {"type": "string", "maxLength": 200}},
            media_type="text/html",
        )
    }

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", GALLERY_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")

    @needs_scope()
    async def get(self) -> None:
        query = self.get_query_argument("q", "")[:200]
        groups = await self.viewer_groups()
        found = await self.call_store(self.apps.gallery, self.user_name, groups, query)
        self.finish(gallery_html(self.settings["service_prefix"], self.user_name, found, query))


class OpenHandler(AppsHandler):
    """Open an app: to Voila in the viewer's own server, which renders the frozen notebook."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "Open the app in the viewer's own server (a redirect), if the viewer may",
            {302: None},
            description="The viewer's server fetches the frozen notebook with the viewer's token.",
        )
    }

    @needs_scope()
    async def get(self, owner: str, name: str) -> None:
        await self.record(owner, name)
        base = self.settings["hub_base_url"]
        user = quote(self.user_name, safe="")
        self.redirect(url_path_join(base, "user", user, "hubforge/apps", quote(owner, safe=""), name))


class PublicHealthHandler(HealthHandler):
    """Readiness (no auth)."""

    @public
    def get(self) -> None:
        self.write_json({"status": "ok"})


#: (OpenAPI path template relative to the service prefix, handler)
ROUTES: list[tuple[str, type[web.RequestHandler]]] = [
    ("", GalleryHandler),
    ("api/health", PublicHealthHandler),
    ("api/openapi.json", OpenAPIHandler),
    ("oauth_callback", OAuthCallbackHandler),
    ("api/apps", AppsListHandler),
    ("api/apps/{owner}/{name}", AppHandler),
    ("api/apps/{owner}/{name}/versions", VersionsHandler),
    ("api/apps/{owner}/{name}/rollback", RollbackHandler),
    ("api/apps/{owner}/{name}/notebook", NotebookHandler),
    ("api/apps/{owner}/{name}/thumbnail", ThumbnailHandler),
    ("open/{owner}/{name}", OpenHandler),
]


def make_app(
    apps: AppStore,
    prefix: str,
    *,
    hub_auth: HubOAuth | None = None,
    kernels: list[str] | None = None,
    cookie_secret: bytes | None = None,
    hub_base_url: str = "/",
    **settings: Any,
) -> web.Application:
    """The tornado application of the apps service under ``prefix``."""
    prefix = url_path_join("/", prefix, "/")
    hub_auth = hub_auth if hub_auth is not None else make_hub_oauth(SERVICE, prefix)
    handlers = [(url_path_join(prefix, path_pattern(template)), handler) for template, handler in ROUTES]
    return web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        apps=apps,
        groups=Groups(hub_auth),
        hub_auth=hub_auth,
        service_prefix=prefix,
        hub_base_url=hub_base_url,
        kernels=kernels if kernels is not None else available_kernels(),
        openapi=build_spec(
            ROUTES,
            prefix,
            cookie_name=hub_auth.cookie_name,
            title="hubforge apps",
            version=__version__,
            description="Notebooks published as Voila apps, behind JupyterHub auth.",
        ),
        cookie_secret=cookie_secret or os.urandom(32),
        xsrf_cookies=False,
        **settings,
    )


class AppsService(HubServiceApp):
    """``python -m hubforge.hub.apps``."""

    service_name: ClassVar[str] = SERVICE
    name = "hubforge-apps"
    description = "The hubforge apps service"

    db_url = Unicode("", help="SQLAlchemy URL of the apps store. Default: backends.apps_db_url.").tag(config=True)

    platform: PlatformConfig
    store: AppStore
    web_app: web.Application

    @catch_config_error
    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        self.init_logging()
        self.platform = load_config()
        self.init_address()
        self.store = AppStore(self.db_url or self.platform.db_url("apps"), self.platform.data_dir / "apps")
        hub_auth = make_hub_oauth(SERVICE, self.service_prefix)
        self.proxy_peers = proxies.from_env()
        self.web_app = make_app(
            self.store,
            self.service_prefix,
            hub_auth=hub_auth,
            cookie_secret=load_cookie_secret(Path(self.platform.data_dir / "apps_cookie_secret")),
            hub_base_url=self.platform.hub.base_url,
            audit=open_spool(platform_spool_dir(self.platform.data_dir, SERVICE), SERVICE),
            log=self.log,
            proxy_peers=self.proxy_peers,
        )

    def start(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = HTTPServer(self.web_app, xheaders=self.proxy_peers is None, max_body_size=MAX_BODY_SIZE + 1024)
        server.listen(self.port, self.ip)
        self.log.info("Apps service listening on http://%s:%d%s", self.ip, self.port, self.service_prefix)
        await self.until_signalled()
        server.stop()
        self.store.dispose()


def main(argv: list[str] | None = None) -> None:
    AppsService.main(argv)
