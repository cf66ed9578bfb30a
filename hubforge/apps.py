"""``hubforge apps``: publish a notebook as a Voila app, and look after one's apps.

It talks to the apps service (``HUBFORGE_APPS_URL``, which the hub gives every server,
or ``--url``) with the hub token of the server it runs in (``JUPYTERHUB_API_TOKEN``),
so it publishes as the person whose server it is. Registered under the
``hubforge.commands`` entry-point group::

    hubforge apps publish churn.ipynb --name churn --description "Churn by region" --share analyst
    hubforge apps list [--mine] [-q WORDS]
    hubforge apps versions churn
    hubforge apps rollback churn --version 1
    hubforge apps share churn --share analyst --share user:frank
    hubforge apps unpublish churn

An app is named ``<owner>/<name>``; a bare name is one of the caller's own. Whatever the
service refuses (a notebook without a kernel, a name taken by nobody's rules) is its
one line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hubforge.contract import APPS_URL_ENV
from hubforge.errors import Invalid
from hubforge.service_client import USER_ENV, ServiceClient

__all__ = ["AppsClient", "register"]


class AppsClient(ServiceClient):
    """The apps service's API, as the holder of a hub token."""

    service = "apps"
    url_env = APPS_URL_ENV

    @staticmethod
    def path(app: str, user: str) -> str:
        """``api/apps/<owner>/<name>`` of ``owner/name``, or of ``user``'s ``name``."""
        owner, sep, name = app.rpartition("/")
        return f"api/apps/{quote(owner if sep else user, safe='')}/{quote(name, safe='')}"

    def publish(self, notebook: Any, name: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "notebook": notebook, **{k: v for k, v in fields.items() if v is not None}}
        return self.call("POST", "api/apps", json=body)

    def apps(self, query: str = "", mine: bool = False) -> list[dict[str, Any]]:
        params = {"q": query, **({"mine": "1"} if mine else {})}
        return self.call("GET", "api/apps", params=params)["apps"]

    def versions(self, path: str) -> list[dict[str, Any]]:
        return self.call("GET", f"{path}/versions")["versions"]

    def rollback(self, path: str, version: int) -> dict[str, Any]:
        return self.call("POST", f"{path}/rollback", json={"version": version})

    def update(self, path: str, **fields: Any) -> dict[str, Any]:
        return self.call("PATCH", path, json={k: v for k, v in fields.items() if v is not None})

    def unpublish(self, path: str) -> None:
        self.call("DELETE", path)


def _read_notebook(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"{path}: cannot read it: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Invalid(f"{path}: not a notebook (not JSON: {exc})") from None


def _line(app: Mapping[str, Any]) -> str:
    version = app.get("version")
    state = f"v{version}" if app.get("published") else "unpublished"
    shared = app.get("shared_with")
    extra = f"  shared with {', '.join(shared) or 'nobody'}" if shared is not None else ""
    return f"{app['owner']}/{app['name']}  {state}  {app['title']}{extra}"


def _run(args: argparse.Namespace) -> int:
    client = AppsClient.from_env(url=args.url)
    user = os.environ.get(USER_ENV, "")
    try:
        if args.apps_command == "publish":
            fields = {"title": args.title, "description": args.description, "share": args.share}
            app = client.publish(_read_notebook(args.notebook), args.name, **fields)
            print(f"published {app['owner']}/{app['name']} version {app['version']}")
        elif args.apps_command == "list":
            for app in client.apps(args.query or "", mine=args.mine):
                print(_line(app))
        elif args.apps_command == "versions":
            for version in client.versions(client.path(args.app, user)):
                params = ", ".join(p["name"] for p in version["parameters"]) or "no parameters"
                print(f"v{version['version']}  {version['published']}  {version['kernel']}  {params}")
        elif args.apps_command == "rollback":
            app = client.rollback(client.path(args.app, user), args.version)
            print(f"{app['owner']}/{app['name']} now runs version {app['version']}")
        elif args.apps_command == "share":
            app = client.update(client.path(args.app, user), share=args.share or [])
            print(_line(app))
        elif args.apps_command == "unpublish":
            client.unpublish(client.path(args.app, user))
            print(f"unpublished {args.app}")
    finally:
        client.close()
    return 0


def register(subparsers: argparse._SubParsersAction, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``apps publish|list|versions|rollback|share|unpublish`` to ``hubforge``."""
    apps = subparsers.add_parser("apps", help="publish notebooks as Voila apps and look after them")
    actions = apps.add_subparsers(dest="apps_command", metavar="ACTION", required=True)
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", help=f"the apps service (default: ${APPS_URL_ENV})")
    common = [*parents, url]
    share_help = "share with a hub group (group:NAME or NAME) or a person (user:NAME); repeat for more"

    publish = actions.add_parser("publish", parents=common, help="publish a notebook as an app (a new version)")
    publish.add_argument("notebook", metavar="NOTEBOOK", help="the .ipynb file")
    publish.add_argument("--name", required=True, help="the app's name: lower-case letters, digits and dashes")
    publish.add_argument("--title", help="its title (default: the notebook's first heading)")
    publish.add_argument("--description", help="what it shows, in a sentence or two")
    publish.add_argument("--share", action="append", metavar="GROUP|USER", help=share_help)

    listing = actions.add_parser("list", parents=common, help="the apps you may open (or your own, with --mine)")
    listing.add_argument("-q", "--query", help="only apps whose title, name, owner or description hold these words")
    listing.add_argument("--mine", action="store_true", help="your own apps, published or not")

    versions = actions.add_parser("versions", parents=common, help="an app's versions (yours)")
    versions.add_argument("app", metavar="APP", help="NAME (yours) or OWNER/NAME")

    rollback = actions.add_parser("rollback", parents=common, help="run an earlier version again")
    rollback.add_argument("app", metavar="APP", help="NAME (yours) or OWNER/NAME")
    rollback.add_argument("--version", type=int, required=True, help="the version to run")

    share = actions.add_parser("share", parents=common, help="set whom an app is shared with (replaces the list)")
    share.add_argument("app", metavar="APP", help="NAME (yours) or OWNER/NAME")
    share.add_argument("--share", action="append", metavar="GROUP|USER", help=share_help + "; none: nobody")

    unpublish = actions.add_parser("unpublish", parents=common, help="take an app out of the gallery")
    unpublish.add_argument("app", metavar="APP", help="NAME (yours) or OWNER/NAME")

    for action in (publish, listing, versions, rollback, share, unpublish):
        action.set_defaults(func=_run)
