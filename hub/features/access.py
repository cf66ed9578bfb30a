"""Who may read restricted feature data: data-access grants, asked of the governance service.

A feature view tagged ``sensitivity: confidential`` or ``restricted`` is read through this
service only by someone holding an active grant: a ``data-access`` request for its target,
``feature_view:<project>/<view>``, approved by a data steward and not yet expired. The
governance service keeps the requests; this service asks it (``GET api/grants?user=``,
as its own hub identity with ``custom:grants:read``) and keeps each person's answer
``ttl`` seconds, so a model scoring in a loop does not ask every time. A read that misses
a grant asks again at once (at most once a second per person), so access approved a
moment ago works on the next try; a grant is never used past its expiry, whatever is kept.

Whatever cannot be checked is refused: without a governance service nobody holds a
grant, and one that does not answer is a 503, never a read. Every read of a restricted view, served or refused, is
an audit event (``features/read``), on disk before the data leaves (:class:`ReadAudit`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from hubforge.errors import Forbidden, Unavailable
from hubforge.events.spool import EventNotDurable, EventSpool
from hubforge.features.catalog import Catalog

__all__ = [
    "READ_SCHEMA",
    "DataAccess",
    "Grant",
    "ReadAudit",
    "restricted_views",
    "target_of",
]

log = logging.getLogger(__name__)

READ_SCHEMA = "https://events.hubforge.dev/features/read/v1"
#: How long a person's grants are kept (seconds).
TTL = 10.0
#: A miss asks governance again, but not more often than this per person (seconds).
RECHECK = 1.0
TIMEOUT = 10.0


def target_of(project: str, view: str) -> str:
    """The data-access target of a feature view: what a request names and a grant covers."""
    return f"feature_view:{project}/{view}"


def restricted_views(catalog: Catalog, views: Iterable[str]) -> list[str]:
    """Those of ``views`` the catalog marks restricted, in order."""
    found = []
    for name in views:
        item = catalog.get("feature_view", name)
        if item is not None and item.restricted:
            found.append(name)
    return found


def refusal(view: str, target: str) -> str:
    """What a person without a grant is told: what is needed, and where to ask."""
    return (
        f"{view} is restricted: reading its data needs an approved data-access request "
        f"(target {target}) from a data steward; ask for it with the feature browser's "
        "Request access button, or submit one to the governance service"
    )


@dataclass(frozen=True)
class Grant:
    """An active grant: the approved request, what it covers, until when."""

    request_id: str
    target: str
    expires: datetime


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_grants(body: Any) -> list[Grant]:
    """The grants in governance's answer; entries it did not write whole are left out."""
    if not isinstance(body, list):
        raise Unavailable("the governance service answered grants that are not a list")
    grants = []
    for entry in body:
        if not isinstance(entry, dict):
            continue
        expires = _parse_time(entry.get("expires"))
        request_id, target = entry.get("request_id"), entry.get("target")
        if expires is not None and isinstance(request_id, str) and isinstance(target, str):
            grants.append(Grant(request_id, target, expires))
    return grants


@dataclass
class _Kept:
    grants: list[Grant]
    fetched: float


class DataAccess:
    """Checks people's grants with the governance service at ``url`` as ``token``."""

    def __init__(self, url: str | None, token: str, ttl: float = TTL, recheck: float = RECHECK) -> None:
        self.url = url.rstrip("/") if url else None
        self.token = token
        self.ttl = ttl
        self.recheck = recheck
        self._kept: dict[str, _Kept] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _fetch(self, user: str) -> list[Grant]:
        if self.url is None:  # no governance service: nobody holds a grant
            return []
        request = HTTPRequest(
            f"{self.url}/api/grants?{urlencode({'user': user})}",
            headers={"Authorization": f"token {self.token}", "Accept": "application/json"},
            request_timeout=TIMEOUT,
            connect_timeout=TIMEOUT,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            log.error("Governance refused the grants of %s: %s", user, exc)
            raise Unavailable(f"the governance service did not answer the grants check ({exc.code})") from None
        except OSError as exc:
            log.error("Governance unreachable for the grants of %s: %s", user, exc)
            raise Unavailable("the governance service cannot be reached to check data-access grants") from None
        try:
            return parse_grants(json.loads(response.body))
        except ValueError:
            raise Unavailable("the governance service answered grants that are not JSON") from None

    async def grants(self, user: str, *, fresh: bool = False) -> list[Grant]:
        """``user``'s active grants: kept ones while fresh enough, else governance's answer."""
        lock = self._locks.setdefault(user, asyncio.Lock())
        async with lock:
            kept, now = self._kept.get(user), time.monotonic()
            age = now - kept.fetched if kept else None
            if kept is None or age is None or age >= self.ttl or (fresh and age >= self.recheck):
                kept = _Kept(await self._fetch(user), time.monotonic())
                self._kept[user] = kept
            return kept.grants

    @staticmethod
    def _match(grants: Sequence[Grant], targets: Sequence[str], now: datetime) -> dict[str, Grant]:
        found: dict[str, Grant] = {}
        for grant in grants:
            if grant.target in targets and grant.expires > now:
                best = found.get(grant.target)
                if best is None or grant.expires > best.expires:
                    found[grant.target] = grant
        return found

    async def require(self, user: str, project: str, views: Sequence[str]) -> dict[str, Grant]:
        """The grant covering each of ``views`` (restricted views of ``project``), by view;
        Forbidden naming the first view ``user`` holds no active grant for, Unavailable when
        governance cannot say."""
        if not views:
            return {}
        targets = {view: target_of(project, view) for view in views}
        found = self._match(await self.grants(user), list(targets.values()), datetime.now(UTC))
        if len(found) < len(targets):
            found = self._match(await self.grants(user, fresh=True), list(targets.values()), datetime.now(UTC))
        for view, target in targets.items():
            if target not in found:
                raise Forbidden(refusal(view, target))
        return {view: found[target] for view, target in targets.items()}


class ReadAudit:
    """The audit events of restricted reads, in the service's spool. Without one (``None``: the
    spool could not be opened) nothing can be recorded, so no restricted read is served."""

    def __init__(self, spool: EventSpool | None) -> None:
        self.spool = spool

    async def record(
        self,
        user: str,
        project: str,
        views: Sequence[str],
        outcome: str,
        *,
        mode: str,
        rows: int,
        features: str,
        client: str,
        grants: Mapping[str, Grant] | None = None,
        reason: str = "",
    ) -> None:
        """One event per view, on disk before this returns; Unavailable when the trail cannot
        keep them, so that a served read is not served unrecorded (fail closed)."""
        if not views:
            return
        if self.spool is None:
            raise Unavailable("the audit trail cannot record reads of restricted data now, so none is served")
        events = []
        for view in views:
            event: dict[str, Any] = {
                "user": user,
                "action": "read",
                "resource": {"type": "feature_view", "id": target_of(project, view)},
                "outcome": outcome,
                "origin": {"observer": "features", **({"client_address": client} if client else {})},
                "mode": mode,
                "rows": rows,
                "features": features,
            }
            grant = (grants or {}).get(view)
            if grant is not None:
                event["request_id"] = grant.request_id
            if reason:
                event["reason"] = reason
            events.append(event)
        spool = self.spool

        def write() -> None:
            for event in events[:-1]:
                spool.emit(READ_SCHEMA, event)
            spool.emit_durable(READ_SCHEMA, events[-1])  # the group: every earlier one is on disk too

        try:
            await asyncio.to_thread(write)
        except EventNotDurable as exc:
            log.error("A restricted read by %s cannot be recorded: %s", user, exc)
            raise Unavailable("the audit trail cannot record this read now, so it was not served") from None
