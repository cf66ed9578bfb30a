"""The outgoing webhook: requests, decisions and deployments told to another system.

When ``services.governance.webhook_url`` is set, each submitted request, each decision and
each deployment that ends (deployed, failed, rolled back) is POSTed there as JSON, signed
the way GitHub signs its webhooks: ``X-Hubforge-Signature-256: sha256=<hex HMAC-SHA256 of
the body>`` with the platform's webhook secret, plus ``X-Hubforge-Event`` and a
``X-Hubforge-Delivery`` id (the same on every retry, so a receiver can drop repeats). A
delivery that fails (no answer, or not 2xx) is retried with exponential back-off; one that
still fails is kept as failed. :meth:`Webhook.recent` lists the latest deliveries for the
service's ``api/notifications`` (failures visible to who reads the audit trail), and each
failure is logged. Deliveries live in the service's memory: the audit trail, not the
webhook, is the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from hubforge.errors import ConfigError

from .model import ApprovalRequest, format_time

__all__ = ["Delivery", "Webhook", "load_webhook_secret", "signature"]

log = logging.getLogger(__name__)

#: How many deliveries :meth:`Webhook.recent` can show.
KEPT = 200


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Hubforge-Signature-256`` header of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def load_webhook_secret(path: Path) -> bytes:
    """The webhook secret in ``path`` (hex), created 0600 on first use; share it with the receiver."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable webhook secret: {exc}") from exc
    secret = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_webhook_secret(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the webhook secret: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    log.info("Made the webhook secret %s: give it to the receiver to check signatures", path)
    return secret


@dataclass
class Delivery:
    """One event on its way to the webhook."""

    event: str
    body: bytes
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: str = "pending"
    attempts: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As ``api/notifications`` lists it (the body left out)."""
        return {
            "id": self.id,
            "event": self.event,
            "created": format_time(self.created),
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
        }


class Webhook:
    """Signs and delivers events to ``url``, retrying with back-off."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        attempts: int = 8,
        first_delay: float = 1.0,
        max_delay: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        self.url, self.secret = url, secret
        self.attempts, self.first_delay, self.max_delay = attempts, first_delay, max_delay
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self.deliveries: deque[Delivery] = deque(maxlen=KEPT)
        self.tasks: set[asyncio.Task[None]] = set()

    def request_event(self, event: str, request: ApprovalRequest, **extra: Any) -> None:
        """Send ``event`` (``request.submitted``, ``request.decided``, ``deployment.changed``)."""
        payload = {"event": event, "at": format_time(datetime.now(UTC)), "request": request.to_json(), **extra}
        delivery = Delivery(event, json.dumps(payload, sort_keys=True).encode())
        self.deliveries.append(delivery)
        task = asyncio.get_running_loop().create_task(self._deliver(delivery))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, delivery: Delivery) -> None:
        delay = self.first_delay
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "hubforge-governance",
            "X-Hubforge-Event": delivery.event,
            "X-Hubforge-Delivery": delivery.id,
            "X-Hubforge-Signature-256": signature(self.secret, delivery.body),
        }
        while True:
            delivery.attempts += 1
            delivery.error = await self._attempt(delivery.body, headers)
            if delivery.error is None:
                delivery.status = "delivered"
                return
            if delivery.attempts >= self.attempts:
                delivery.status = "failed"
                log.error("Webhook delivery %s (%s) failed %d times: %s", delivery.id, delivery.event,
                          delivery.attempts, delivery.error)  # fmt: skip
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    async def _attempt(self, body: bytes, headers: dict[str, str]) -> str | None:
        """None when the receiver took it (2xx), else why not."""
        try:
            answer = await self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        if answer.is_success:
            return None
        return f"the receiver answered {answer.status_code}"

    def recent(self) -> list[dict[str, Any]]:
        """The latest deliveries, newest first."""
        return [delivery.to_json() for delivery in reversed(self.deliveries)]

    async def close(self, timeout: float = 10.0) -> None:
        """Give deliveries under way ``timeout`` seconds, then close."""
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout)
        for task in self.tasks:
            task.cancel()
        await self.client.aclose()
