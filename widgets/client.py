"""What the widgets call, as the person's server: the governance service's REST API and MLflow.

A kernel holds its server's hub token (``JUPYTERHUB_API_TOKEN``): it may submit and read
the person's approval requests, never decide one (the service refuses any decision made
with a token). :class:`GovernanceClient` calls only what that token may call, so a widget
can do nothing a person could not do with ``curl`` and the same token. Every failure is a
:class:`WidgetError` whose message is one line naming what failed; every call has a
timeout and is tried once (a widget's Refresh button tries again).

:func:`mlflow_client` makes the MLflow client the way the kernel's tracking does: the
hub's MLflow URL, and the server's token in ``MLFLOW_TRACKING_TOKEN``.

:class:`Background` runs a widget's slow calls off the kernel's thread (ipywidgets
callbacks run on it), so the notebook stays responsive while a widget shows a
progress indicator.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx

from hubforge.contract import FEATURES_URL_ENV, GOVERNANCE_URL_ENV, MLFLOW_URL_ENV
from hubforge.errors import HubforgeError
from hubforge.features.catalog import Catalog

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "MAX_PAGES",
    "PUBLIC_HUB_ENV",
    "SCORE_TIMEOUT",
    "TIMEOUT",
    "TOKEN_ENV",
    "Background",
    "FeaturesClient",
    "GovernanceClient",
    "WidgetError",
    "describe",
    "mlflow_client",
    "one_line",
    "pretty",
    "translated",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Every governance call: 5 s to connect, 20 s for the answer (a policy check reads MLflow).
TIMEOUT = httpx.Timeout(20.0, connect=5.0)
#: Scoring a sample may start the model's process first (serving.md: allow a minute).
SCORE_TIMEOUT = httpx.Timeout(90.0, connect=5.0)
#: The most pages of 500 requests a listing reads.
MAX_PAGES = 10
_PAGE = 500
#: The server's hub token; JupyterHub's name for it.
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
#: The hub's public URL (JupyterHub >= 4 sets it for servers): where a browser reaches it.
PUBLIC_HUB_ENV = "JUPYTERHUB_PUBLIC_HUB_URL"


class WidgetError(HubforgeError):
    """What a widget could not do, as one line for the person (never a traceback)."""


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line of at most ``limit`` characters."""
    flat = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _answer(response: httpx.Response) -> str:
    """The message of an error answer: the service's JSON ``message``, else its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message) if message else (response.text or response.reason_phrase)
    return f"{response.status_code} {one_line(text, 240)}"


class GovernanceClient:
    """The governance service's REST API at ``url`` (``.../services/governance``) as ``token``.

    ``public_hub_url``: the hub as browsers reach it; the decision page links use its
    origin (default: ``url``'s). ``transport``: httpx's, for tests.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        public_hub_url: str = "",
        timeout: httpx.Timeout = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.public_hub_url = public_hub_url
        # Sent per call rather than as a default header: a model endpoint off the hub gets none.
        self._auth = {"Authorization": f"token {token}"}
        headers = {"Accept": "application/json"}
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport, follow_redirects=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> GovernanceClient:
        """The client a kernel's environment describes; WidgetError naming what is missing."""
        env = os.environ if environ is None else environ
        url, token = env.get(GOVERNANCE_URL_ENV, ""), env.get(TOKEN_ENV, "")
        if not url:
            raise WidgetError(f"{GOVERNANCE_URL_ENV} is not set: the widgets run in a kernel of a hubforge server")
        if not token:
            raise WidgetError(f"{TOKEN_ENV} is not set: the widgets call the platform as your server")
        return cls(url, token, public_hub_url=env.get(PUBLIC_HUB_ENV, ""), **kwargs)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _call(self, what: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, tried once; a WidgetError starting with ``what`` unless it answers 2xx."""
        try:
            response = self._http.request(method, f"{self.url}/{path}", headers=self._auth, **kwargs)
        except httpx.TimeoutException:
            raise WidgetError(f"{what}: the governance service did not answer in time") from None
        except httpx.HTTPError as exc:
            words = one_line(str(exc), 160) or type(exc).__name__
            raise WidgetError(f"{what}: cannot reach the governance service at {self.url}: {words}") from None
        if not response.is_success:
            raise WidgetError(f"{what}: {_answer(response)}")
        return response

    def _json(self, what: str, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(what, method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise WidgetError(f"{what}: the governance service answered no JSON") from None

    def whoami(self) -> dict[str, Any]:
        """The caller's name, groups, personas and custom scopes."""
        found: dict[str, Any] = self._json("cannot ask who you are", "GET", "api/whoami")
        return found

    def precheck(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The deploy policy's word on a deploy request not yet submitted: {policy, decision, reasons}."""
        found: dict[str, Any] = self._json("cannot pre-check the deploy policy", "POST", "api/policy/deploy", json=body)
        return found

    def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Submit an approval request; the pending request."""
        found: dict[str, Any] = self._json("cannot submit the request", "POST", "api/requests", json=body)
        return found

    def grants(self, target: str | None = None) -> list[dict[str, Any]]:
        """The caller's active data-access grants (of ``target`` only, when given)."""
        params = {"target": target} if target else {}
        found: list[dict[str, Any]] = self._json("cannot read your data-access grants", "GET", "api/grants",
                                                 params=params)  # fmt: skip
        return found

    def get_request(self, request_id: str) -> dict[str, Any]:
        """One approval request."""
        what = f"cannot read request {request_id}"
        found: dict[str, Any] = self._json(what, "GET", f"api/requests/{quote(request_id, safe='')}")
        return found

    def list_requests(self, *, limit: int = 200, **filters: str | None) -> list[dict[str, Any]]:
        """Up to ``limit`` requests the caller may see, newest first (``status``, ``kind``, ``model``)."""
        params = {key: value for key, value in filters.items() if value}
        found: list[dict[str, Any]] = []
        cursor = None
        for _ in range(MAX_PAGES):
            page = {**params, "limit": str(min(limit - len(found), _PAGE))}
            response = self._call("cannot list requests", "GET", "api/requests", params=page | _cursor(cursor))
            found += response.json()
            cursor = response.headers.get("X-Next-Cursor")
            if not cursor or len(found) >= limit:
                break
        return found[:limit]

    def page_url(self, request_id: str) -> str:
        """The request's decision page, as the person's browser reaches it."""
        page = f"{self.url}/requests/{quote(request_id, safe='')}"
        if not self.public_hub_url:
            return page
        public, parts = urlsplit(self.public_hub_url), urlsplit(page)
        return parts._replace(scheme=public.scheme, netloc=public.netloc).geturl()

    def endpoint_url(self, endpoint: str) -> str:
        """An endpoint URL of a request (absolute, or a path on the hub) as an absolute URL."""
        return urljoin(self.url + "/", endpoint)

    def score(self, endpoint: str, payload: Any) -> Any:
        """POST ``payload`` as JSON to a deployed endpoint; its JSON answer (or text).

        The token goes only to the hub (the governance service's origin, or the public
        hub's): a model endpoint elsewhere is called without it.
        """
        url = self.endpoint_url(endpoint)
        if urlsplit(url).scheme not in ("http", "https"):
            raise WidgetError(f"cannot score: {one_line(endpoint, 120)} is not an http(s) URL")
        headers = self._auth if self._hub_origin(url) else None
        try:
            response = self._http.post(url, json=payload, headers=headers, timeout=SCORE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise WidgetError(f"cannot score: {url}: {one_line(str(exc), 160) or type(exc).__name__}") from None
        if not response.is_success:
            raise WidgetError(f"cannot score: {_answer(response)}")
        try:
            return response.json()
        except ValueError:
            return response.text

    def _hub_origin(self, url: str) -> bool:
        origins = {_origin(self.url), _origin(self.public_hub_url)} if self.public_hub_url else {_origin(self.url)}
        return _origin(url) in origins


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _cursor(cursor: str | None) -> dict[str, str]:
    return {"cursor": cursor} if cursor else {}


def mlflow_client(environ: Mapping[str, str] | None = None) -> MlflowClient:
    """The person's MLflow client: the hub's MLflow (``MLFLOW_URL_ENV``, else
    ``MLFLOW_TRACKING_URI``) as tracking and registry URI.

    The server extension gives every kernel ``MLFLOW_TRACKING_TOKEN`` = the server's
    token; a kernel without it (started some other way) gets it here, as MLflow's client
    reads it from the process environment.
    """
    env = os.environ if environ is None else environ
    hub_mlflow = env.get(MLFLOW_URL_ENV, "")
    uri = hub_mlflow or env.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise WidgetError(f"no MLflow to use: {MLFLOW_URL_ENV} is not set (the widgets run in a hubforge server)")
    if hub_mlflow and env.get(TOKEN_ENV) and not os.environ.get("MLFLOW_TRACKING_TOKEN"):
        os.environ["MLFLOW_TRACKING_TOKEN"] = env[TOKEN_ENV]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """MLflow's errors inside as a one-line WidgetError starting with ``what``."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise WidgetError(f"{what}: {one_line(str(exc.message), 240)}") from None


def describe(exc: BaseException) -> str:
    """An exception as one line; an HTTP error (``requests``', as MLflow's artifact calls raise
    it) by its status and the message of its JSON answer."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if response is None or not isinstance(status, int):
        return f"{type(exc).__name__}: {one_line(str(exc))}"
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return f"{status} {one_line(str(message or getattr(response, 'text', '') or exc), 240)}"


class Background:
    """Runs a widget's slow calls in a thread, one after another; only the latest one reports.

    ``busy(text)`` is called on the kernel's side of the change (``text`` says what runs,
    "" when nothing does); ``done`` and ``failed`` run in the worker thread, where
    setting a widget's ``value`` is fine. A newer job makes an older one's result stale:
    it is dropped, so a slow answer never overwrites a newer one.
    """

    def __init__(self, busy: Callable[[str], None]) -> None:
        self._busy = busy
        self._lock = threading.Lock()
        self._generation = 0
        self._thread: threading.Thread | None = None

    def run(
        self, what: str, job: Callable[[], T], done: Callable[[T], None], failed: Callable[[str], None]
    ) -> threading.Thread:
        """Start ``job`` in a daemon thread; ``done(result)`` or ``failed(one line)`` when it ends."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        self._busy(what)

        def work() -> None:
            try:
                result = job()
            except HubforgeError as exc:
                message = str(exc)
            except Exception as exc:  # a widget shows one line, never a traceback
                log.debug("hubforge widget: %s failed", what, exc_info=True)
                message = f"{what} failed: {describe(exc)}"
            else:
                self._finish(generation, lambda: done(result))
                return
            self._finish(generation, lambda: failed(message))

        thread = threading.Thread(target=work, name=f"hubforge-widget-{generation}", daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def _finish(self, generation: int, report: Callable[[], None]) -> None:
        if generation != self._generation:
            return
        try:
            report()
        except Exception:  # showing the result failed: a thread's traceback would land in a cell
            log.warning("hubforge widget: showing a result failed", exc_info=True)
        finally:
            if generation == self._generation:
                self._busy("")

    @property
    def running(self) -> bool:
        """Whether the latest job is still running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for the latest job to end; whether it did within ``timeout`` seconds."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running


def pretty(value: Any, limit: int = 20_000) -> str:
    """``value`` as indented JSON text (or its text), cut at ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class FeaturesClient:
    """The features service's catalog at ``url`` (``.../services/features``) as ``token``.

    The browser searches the whole catalog in the kernel, so each keystroke costs no call;
    :meth:`catalog` remembers the last answer's ETag and catalog, so a Refresh of an
    unchanged catalog costs a 304 and no parsing. ``transport``: httpx's, for tests.
    """

    def __init__(
        self, url: str, token: str, *, timeout: httpx.Timeout = TIMEOUT, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "Authorization": f"token {token}"}
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport, follow_redirects=False)
        # (ETag, catalog) of the last 200, replaced as a whole so a concurrent refresh reads a matching pair.
        self._cached: tuple[str, Catalog] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> FeaturesClient:
        """The client a kernel's environment describes; WidgetError naming what is missing."""
        env = os.environ if environ is None else environ
        url, token = env.get(FEATURES_URL_ENV, ""), env.get(TOKEN_ENV, "")
        if not url:
            raise WidgetError(f"{FEATURES_URL_ENV} is not set: the feature browser runs in a hubforge server's kernel")
        if not token:
            raise WidgetError(f"{TOKEN_ENV} is not set: the feature browser calls the platform as your server")
        return cls(url, token, **kwargs)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def catalog(self) -> Catalog:
        """The catalog now: the cached one when the service answers 304, else the new one."""
        what = "cannot read the feature catalog"
        cached = self._cached
        headers = {"If-None-Match": cached[0]} if cached else {}
        try:
            response = self._http.get(f"{self.url}/api/catalog", headers=headers)
        except httpx.TimeoutException:
            raise WidgetError(f"{what}: the features service did not answer in time") from None
        except httpx.HTTPError as exc:
            words = one_line(str(exc), 160) or type(exc).__name__
            raise WidgetError(f"{what}: cannot reach the features service at {self.url}: {words}") from None
        if response.status_code == 304 and cached:
            return cached[1]
        if not response.is_success:
            raise WidgetError(f"{what}: {_answer(response)}")
        try:
            found = Catalog.from_json(response.content)
        except HubforgeError as exc:
            raise WidgetError(f"{what}: {one_line(str(exc), 240)}") from None
        etag = response.headers.get("ETag")
        self._cached = (etag, found) if etag else None
        return found
