"""A hub service's REST API as the holder of a hub token: what ``hubforge apps`` and
``hubforge schedule`` talk to their services through, from a person's server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hubforge.errors import Invalid, Refusal, Unavailable

__all__ = ["TOKEN_ENV", "USER_ENV", "ServiceClient", "ServiceRefusal"]

TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
USER_ENV = "JUPYTERHUB_USER"


class ServiceRefusal(Refusal):
    """What a service refused, with its status (the CLI's one line)."""


class ServiceClient:
    """``service``'s API at ``url`` (its prefix), as the holder of ``token``."""

    #: The service's name, in messages; the variable naming its URL in a person's server.
    service = ""
    url_env = ""

    def __init__(self, url: str, token: str, timeout: float = 60) -> None:
        import httpx

        self.base = url.rstrip("/") + "/"
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"token {token}"}, timeout=timeout, follow_redirects=False
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, url: str | None = None) -> Any:
        """The client for the server this runs in: its URL variable (or ``url``) and its token."""
        env = os.environ if env is None else env
        url = url or env.get(cls.url_env, "")
        token = env.get(TOKEN_ENV, "")
        if not url:
            raise Invalid(
                f"no {cls.service} service: {cls.url_env} is unset (run this in your hub server, or pass --url)"
            )
        if not token:
            raise Invalid(f"{TOKEN_ENV} is unset: run this in your hub server (a terminal or a notebook)")
        return cls(url, token)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer; the service's own message, as one line, when it refuses."""
        import httpx

        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the {self.service} service at {self.base} cannot be reached: {exc}") from None
        if resp.status_code >= 400:
            try:
                message = resp.json().get("message") or resp.reason_phrase
            except ValueError:
                message = resp.reason_phrase
            raise ServiceRefusal(f"{message} ({resp.status_code})", status=resp.status_code)
        return resp.json() if resp.content and "json" in resp.headers.get("content-type", "") else None
