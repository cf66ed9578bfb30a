"""Online feature values in a notebook, through the features service, hot keys kept in the kernel.

``OnlineFeatures.from_env().get(["merchant_risk:avg_ticket_usd"], [{"merchant_id": 501}])``
answers like Feast's ``get_online_features(...).to_dict()``: a column per feature and per
join key, a value per entity row. The kernel has no Feast and cannot read the online store
(it is the platform's); the service reads it, and refuses restricted views to anyone
without an approved data-access request. A model scoring in a loop asks for the same few
entities again and again, so each row's values are kept for ``ttl`` seconds (the online
store changes only when it is materialized): a repeated key costs a dictionary lookup,
and only the rows not kept go to the service, in one call. ``ttl=0`` keeps nothing.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from hubforge.contract import FEATURES_URL_ENV

from .repo import FeaturesError
from .usage import record_retrieval

__all__ = ["OnlineFeatures", "service_env"]

#: The server's hub token in a kernel.
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)

RowKey = tuple[tuple[str, Any], ...]


def service_env(environ: Mapping[str, str] | None, reads: str) -> tuple[str, str]:
    """The features service's URL and the server's token, as a kernel of a hubforge server has
    them; FeaturesError naming what is missing (``reads``: what kind of reads need them)."""
    env = os.environ if environ is None else environ
    url, token = env.get(FEATURES_URL_ENV, ""), env.get(TOKEN_ENV, "")
    if not url or not token:
        missing = FEATURES_URL_ENV if not url else TOKEN_ENV
        raise FeaturesError(f"features: {missing} is not set: {reads} reads run in a hubforge server's kernel")
    return url, token


class OnlineFeatures:
    """Online reads through the features service at ``url`` as ``token``; see the module."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        ttl: float = 5.0,
        max_keys: int = 10_000,
        timeout: httpx.Timeout = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        record: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.ttl, self.max_keys = ttl, max_keys
        #: Whether reads are recorded on the notebook's run (a glance from the browser is not).
        self.record = record
        headers = {"Authorization": f"token {token}", "Accept": "application/json"}
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport)
        self._kept: OrderedDict[tuple[tuple[str, ...], RowKey], tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        #: Rows answered from the kernel and from the service, since it was made.
        self.hits = self.misses = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> OnlineFeatures:
        """The reader a kernel of a hubforge server describes; FeaturesError naming what is missing."""
        return cls(*service_env(environ, "online"), **kwargs)

    def close(self) -> None:
        self._http.close()

    def get(
        self,
        features: Sequence[str] = (),
        entity_rows: Sequence[Mapping[str, Any]] = (),
        *,
        feature_service: str | None = None,
    ) -> dict[str, list[Any]]:
        """The values of ``features`` (``view:feature``) or of ``feature_service`` for each of
        ``entity_rows``, by column; FeaturesError (one line, the service's word) when refused."""
        what = ("@service", feature_service) if feature_service else tuple(features)
        rows = [dict(row) for row in entity_rows]
        keys = [(what, tuple(sorted(row.items()))) for row in rows]
        found: dict[int, dict[str, Any]] = {}
        now = time.monotonic()
        with self._lock:
            for i, key in enumerate(keys):
                kept = self._kept.get(key)
                if kept is not None and kept[0] > now:
                    self._kept.move_to_end(key)
                    found[i] = kept[1]
        missing = [i for i in range(len(rows)) if i not in found]
        self.hits += len(rows) - len(missing)
        self.misses += len(missing)
        if missing:
            body: dict[str, Any] = {"entity_rows": [rows[i] for i in missing]}
            body.update({"feature_service": feature_service} if feature_service else {"features": list(features)})
            columns = self._read(body)
            with self._lock:
                for n, i in enumerate(missing):
                    found[i] = {name: values[n] for name, values in columns.items()}
                    if self.ttl > 0:
                        self._kept[keys[i]] = (now + self.ttl, found[i])
                        self._kept.move_to_end(keys[i])
                while len(self._kept) > self.max_keys:
                    self._kept.popitem(last=False)
        names = list(found[0]) if found else []
        if self.record:
            record_retrieval("online", (), [feature_service or ""], () if feature_service else features)
        return {name: [found[i][name] for i in range(len(rows))] for name in names}

    def _read(self, body: Mapping[str, Any]) -> dict[str, list[Any]]:
        try:
            answer = self._http.post(f"{self.url}/api/online", json=body)
        except httpx.HTTPError as exc:
            raise FeaturesError(f"features: cannot reach the features service at {self.url}: {exc}") from None
        try:
            data = answer.json()
        except ValueError:
            data = {}
        if answer.status_code != 200 or not isinstance(data.get("features"), dict):
            message = data.get("message") if isinstance(data, dict) else None
            raise FeaturesError(
                f"features: online read refused ({answer.status_code}): {message or answer.reason_phrase}"
            )
        return data["features"]
