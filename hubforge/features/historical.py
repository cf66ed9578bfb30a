"""Training sets in a notebook: historical (point-in-time) feature values, through the features service.

``HistoricalFeatures.from_env().get(["customer_activity:sessions_7d"], entity_df)``
answers like Feast's ``get_historical_features(entity_df, features).to_df()``: the rows of
``entity_df``, in its order, each with the values of the features as they were at its
``event_timestamp`` (within each view's TTL; missing where a view held none then). The
kernel has no Feast and cannot read the offline store (it is the platform's); the service
reads it, and refuses restricted views to anyone without an approved data-access request.

``entity_df`` (a data frame, or a list of dicts) has the join keys, the request fields an
on-demand view computes from, and ``event_timestamp`` (a time without a zone is UTC);
other columns (labels) come back as they were. It goes to the service in parts of at most
:data:`MAX_ROWS` rows and :data:`MAX_BYTES` bytes, so a training set of any size reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pandas as pd

from .frames import records
from .reader import service_env
from .repo import FeaturesError
from .usage import record_retrieval

__all__ = ["MAX_BYTES", "MAX_ROWS", "HistoricalFeatures"]

#: The most rows the service takes in one read (its ``api/historical`` limit).
MAX_ROWS = 10_000
#: The most bytes of rows sent at once: under the service's 4 MiB body, with room for the features.
MAX_BYTES = 3 * 1024 * 1024
#: Each row's time column.
TIMESTAMP = "event_timestamp"
#: A historical read scans the offline store's files: it takes longer than an online one.
TIMEOUT = httpx.Timeout(300.0, connect=5.0)


def _frame(entity_df: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    frame = entity_df if isinstance(entity_df, pd.DataFrame) else pd.DataFrame([dict(row) for row in entity_df])
    if frame.empty:
        raise FeaturesError("features: entity_df has no rows: nothing to read")
    if TIMESTAMP not in frame.columns:
        raise FeaturesError(f"features: entity_df has no {TIMESTAMP} column: the time to read each row's values as of")
    return frame.reset_index(drop=True)


def _parts(rows: list[dict[str, Any]]) -> list[list[bytes]]:
    """The rows as JSON, in parts the service takes (each at most MAX_ROWS rows and MAX_BYTES)."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for row in rows:
        text = json.dumps(row, allow_nan=False).encode()
        if parts[-1] and (len(parts[-1]) == MAX_ROWS or size + len(text) + 1 > MAX_BYTES):
            parts.append([])
            size = 0
        parts[-1].append(text)
        size += len(text) + 1
    return parts


class HistoricalFeatures:
    """Point-in-time reads through the features service at ``url`` as ``token``; see the module."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: httpx.Timeout = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"token {token}", "Accept": "application/json",
                   "Content-Type": "application/json"}  # fmt: skip
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> HistoricalFeatures:
        """The reader a kernel of a hubforge server describes; FeaturesError naming what is missing."""
        return cls(*service_env(environ, "historical"), **kwargs)

    def close(self) -> None:
        self._http.close()

    def get(
        self,
        features: Sequence[str] = (),
        entity_df: pd.DataFrame | Sequence[Mapping[str, Any]] = (),
        *,
        feature_service: str | None = None,
    ) -> pd.DataFrame:
        """``entity_df``'s rows with the values of ``features`` (``view:feature``) or of
        ``feature_service`` as of each row's ``event_timestamp``; FeaturesError (one line,
        the service's word) when refused."""
        if isinstance(features, str):
            raise FeaturesError("features: a list of references view:feature (a feature service: feature_service=)")
        frame = _frame(entity_df)
        try:
            rows = records(frame)
            parts = _parts(rows)
        except ValueError:
            raise FeaturesError("features: entity_df holds a value JSON cannot carry (infinity?)") from None
        what = json.dumps({"feature_service": feature_service} if feature_service else {"features": list(features)})
        columns: dict[str, list[Any]] = {}
        for part in parts:
            body = what[:-1].encode() + b', "entity_rows": [' + b",".join(part) + b"]}"
            for name, values in self._read(body).items():
                columns.setdefault(name, []).extend(values)
        result = frame.copy()
        for name, values in columns.items():
            if name not in frame.columns:
                result[name] = values
        if TIMESTAMP in columns:  # as Feast answers it: in UTC
            result[TIMESTAMP] = pd.to_datetime(columns[TIMESTAMP], utc=True, format="ISO8601")
        # The session's run learns what it was trained on (its tracker's queue, off this path).
        record_retrieval("historical", (), [feature_service or ""], () if feature_service else features)
        return result

    def _read(self, body: bytes) -> dict[str, list[Any]]:
        try:
            answer = self._http.post(f"{self.url}/api/historical", content=body)
        except httpx.HTTPError as exc:
            raise FeaturesError(f"features: cannot reach the features service at {self.url}: {exc}") from None
        try:
            data = answer.json()
        except ValueError:
            data = {}
        if answer.status_code != 200 or not isinstance(data.get("features"), dict):
            message = data.get("message") if isinstance(data, dict) else None
            raise FeaturesError(
                f"features: historical read refused ({answer.status_code}): {message or answer.reason_phrase}"
            )
        return data["features"]
