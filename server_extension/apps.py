"""Opening a published app in the viewer's own server: ``<base_url>hubforge/apps/<owner>/<name>``.

The gallery's Open link comes here, in the server of the person who clicked it. The
handler asks the apps service (``HUBFORGE_APPS_URL``) for the app's frozen notebook
with this server's own hub token, so the service decides with the viewer's identity
whether they may open it; keeps the copy under ``hubforge-apps/<owner>/<name>.ipynb``
in the server's root (written again only when the app's version changed); and sends
the browser to Voila's page for it. The app's kernel is then one of this server's:
it runs as the viewer's account, with the viewer's token, and sees only what the
viewer may read. Nobody's token but the viewer's is involved at any step.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from hubforge.contract import APPS_URL_ENV
from hubforge.files import replace_durably

__all__ = ["APPS_FOLDER", "OpenAppHandler", "app_handlers"]

#: Where opened apps are kept in the server's root (Voila renders only what the server's
#: contents hold, and refuses hidden folders).
APPS_FOLDER = "hubforge-apps"
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_OWNER = re.compile(r"[^/\x00-\x1f\x7f]{1,255}")


class OpenAppHandler(JupyterHandler):
    """Fetch an app's notebook as the server's owner and open it in Voila."""

    @web.authenticated
    async def get(self, owner: str, name: str) -> None:
        if not _NAME.fullmatch(name) or not _OWNER.fullmatch(owner) or owner in (".", ".."):
            raise web.HTTPError(404, "no such app")
        service, token = os.environ.get(APPS_URL_ENV, ""), os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not service or not token:
            raise web.HTTPError(503, "this server has no apps service (HUBFORGE_APPS_URL is unset)")
        url = f"{service.rstrip('/')}/api/apps/{quote(owner, safe='')}/{name}/notebook"
        request = HTTPRequest(url, headers={"Authorization": f"token {token}"}, request_timeout=30)
        try:
            resp = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            if exc.code == 404:
                raise web.HTTPError(404, "no such app") from None
            raise web.HTTPError(502, "the apps service answered %s", exc.code) from None
        except OSError as exc:
            raise web.HTTPError(502, "the apps service cannot be reached: %s", exc) from None
        relative = f"{APPS_FOLDER}/{owner}/{name}.ipynb"
        keep(Path(self.settings["server_root_dir"]).expanduser() / relative, resp.body)
        voila = url_path_join(self.base_url, "voila/render", quote(APPS_FOLDER), quote(owner, safe=""), f"{name}.ipynb")
        self.redirect(voila)


def keep(path: Path, body: bytes) -> None:
    """``body`` at ``path``, replaced whole (never half-written) when it differs."""
    try:
        if path.read_bytes() == body:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_durably(path, body)


def app_handlers(base_url: str) -> list[tuple[str, Any]]:
    """The routes to add to the server's web app."""
    return [(url_path_join(base_url, r"hubforge/apps/(?P<owner>[^/]+)/(?P<name>[^/]+)"), OpenAppHandler)]
