"""The feature browser's access panel: where one stands with restricted data, and the request.

A feature view tagged ``sensitivity: confidential`` or ``restricted`` is read only under a
data-access grant (the features service checks it). For such a view, or a feature service
that reads one, the panel says, for each restricted view, whether the person holds access
(until when), has a request pending (with its decision page), or neither; and offers the
request: a purpose and a duration, sent to the governance service as a ``data-access``
request for the view's target (``feature_view:<project>/<view>``), one per view that lacks
both. A data steward decides it in the approval queue; the panel's Check again shows the
outcome. Nothing here grants anything: the panel only asks, and tells.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import ipywidgets as widgets

from .client import Background, GovernanceClient, one_line
from .feature_text import SPINNER

__all__ = ["DURATIONS", "AccessPanel", "AccessState", "GovernanceLike", "access_html", "target_of"]

#: What the duration menu offers (label, days); governance accepts 1 to 90.
DURATIONS: tuple[tuple[str, int], ...] = (("1 day", 1), ("7 days", 7), ("30 days", 30), ("90 days", 90))
#: The shortest purpose a data steward can judge.
MIN_PURPOSE = 10
MAX_PURPOSE = 2000


def target_of(project: str, view: str) -> str:
    """The data-access target of a feature view (as the features service names it)."""
    return f"feature_view:{project}/{view}"


class GovernanceLike(Protocol):
    """What the panel asks of the governance service (:class:`~.client.GovernanceClient`)."""

    def grants(self, target: str | None = None) -> list[dict[str, Any]]: ...

    def list_requests(self, *, limit: int = 200, **filters: str | None) -> list[dict[str, Any]]: ...

    def submit(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def page_url(self, request_id: str) -> str: ...


@dataclass
class AccessState:
    """Where one stands with each restricted view: its grant, or its pending request."""

    project: str
    views: list[str]
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        """The views with neither a grant nor a pending request."""
        return [v for v in self.views if v not in self.grants and v not in self.pending]


def read_state(gov: GovernanceLike, project: str, views: Sequence[str]) -> AccessState:
    """Ask governance where the caller stands with ``views``."""
    state = AccessState(project, list(views))
    targets = {target_of(project, v): v for v in views}
    for grant in gov.grants():
        view = targets.get(str(grant.get("target")))
        if view is not None:
            state.grants[view] = grant
    for request in gov.list_requests(kind="data-access", status="pending"):
        view = targets.get(str(request.get("target")))
        if view is not None and view not in state.grants:
            state.pending.setdefault(view, request)
            state.links[view] = gov.page_url(str(request.get("id")))
    return state


def _day(text: Any) -> str:
    return html.escape(str(text or "")[:16].replace("T", " ")) + " UTC" if text else "?"


def access_html(state: AccessState) -> str:
    """The panel's account of ``state``, escaped."""
    lines = []
    for view in state.views:
        name = f"<code>{html.escape(view)}</code>"
        if view in state.grants:
            grant = state.grants[view]
            lines.append(f"✅ {name}: you hold access until {_day(grant.get('expires'))} "
                         f"(approved by {html.escape(str(grant.get('approved_by') or '?'))}).")  # fmt: skip
        elif view in state.pending:
            request = state.pending[view]
            link = html.escape(state.links.get(view, ""), quote=True)
            rid = html.escape(str(request.get("id", "")))
            ref = f'<a href="{link}" target="_blank" rel="noopener">request {rid}</a>' if link else f"request {rid}"
            lines.append(f"⏳ {name}: your {ref} awaits a data steward's decision.")
        else:
            lines.append(f"🔒 {name}: restricted; you hold no access. Request it below.")
    return "<br>".join(lines)


class AccessPanel(widgets.VBox):
    """For the restricted views of the item shown: where one stands, and the request form.

    ``governance``: made when first needed (default :meth:`GovernanceClient.from_env`).
    """

    def __init__(self, governance: Callable[[], GovernanceLike] | None = None) -> None:
        self._make = governance or GovernanceClient.from_env
        self._gov: GovernanceLike | None = None
        self._state: AccessState | None = None
        self.heading = widgets.HTML("<b>Restricted data</b>")
        self.activity, self.status, self.message = widgets.HTML(""), widgets.HTML(""), widgets.HTML("")
        self.purpose = widgets.Textarea(placeholder="Purpose: what you will use the data for (for the data steward)",
                                        layout=widgets.Layout(width="100%", height="4em"))  # fmt: skip
        self.duration = widgets.Dropdown(options=DURATIONS, value=30, description="For")
        self.request_button = widgets.Button(description="Request access", icon="key", button_style="warning")
        self.request_button.on_click(lambda _: self.request())
        self.check_button = widgets.Button(description="Check again", icon="refresh")
        self.check_button.on_click(lambda _: self.check())
        self.form = widgets.VBox([self.purpose, widgets.HBox([self.duration, self.request_button])])
        self._work = Background(self._busy)
        super().__init__([self.heading, self.activity, self.status, self.check_button, self.form, self.message])
        self.layout.display = "none"

    def _governance(self) -> GovernanceLike:
        if self._gov is None:
            self._gov = self._make()
        return self._gov

    def _busy(self, what: str) -> None:
        self.request_button.disabled = bool(what) or not (self._state and self._state.missing)
        self.check_button.disabled = bool(what)
        self.activity.value = SPINNER + html.escape(what) + "…" if what else ""

    def _failed(self, message: str) -> None:
        self.message.value = f'<span style="color:#cf222e">{html.escape(one_line(message, 400))}</span>'

    def show(self, project: str, views: Sequence[str]) -> None:
        """Show the panel for the restricted ``views`` of ``project`` (hidden when none)."""
        self._state = AccessState(project, list(views)) if views else None
        self.message.value, self.status.value = "", ""
        if not views:
            self.layout.display = "none"
            return
        self.layout.display = ""
        self.check()

    def check(self) -> None:
        """Ask governance again where one stands."""
        state = self._state
        if state is None:
            return
        self.message.value = ""
        self._work.run("Checking your access", lambda: read_state(self._governance(), state.project, state.views),
                       self._shown, self._failed)  # fmt: skip

    def _shown(self, state: AccessState) -> None:
        self._state = state
        self.status.value = access_html(state)
        self.form.layout.display = "" if state.missing else "none"
        self.request_button.disabled = not state.missing

    def request(self) -> None:
        """Send a data-access request for each view lacking access, with the purpose and duration."""
        state = self._state
        purpose = self.purpose.value.strip()
        if state is None or not state.missing:
            self.message.value = "Nothing to request: you hold or have asked for access to every view shown."
            return
        if len(purpose) < MIN_PURPOSE:
            self._failed(f"Say what you will use the data for (at least {MIN_PURPOSE} characters): "
                         "a data steward decides on it.")  # fmt: skip
            return
        if len(purpose) > MAX_PURPOSE:
            self._failed(f"The purpose is over {MAX_PURPOSE} characters.")
            return
        days = int(self.duration.value)
        views = list(state.missing)

        def send() -> tuple[list[dict[str, Any]], AccessState]:
            gov = self._governance()
            sent = [gov.submit({"kind": "data-access", "target": target_of(state.project, v),
                                "justification": purpose, "duration_days": days}) for v in views]  # fmt: skip
            return sent, read_state(gov, state.project, state.views)

        def done(result: tuple[list[dict[str, Any]], AccessState]) -> None:
            sent, new = result
            self._shown(new)
            ids = ", ".join(html.escape(str(r.get("id", ""))) for r in sent)
            self.message.value = (f"Sent: request {ids}. A data steward decides in the approval queue; "
                                  "Check again shows the outcome.")  # fmt: skip
            self.purpose.value = ""

        self._work.run("Sending the request", send, done, self._failed)

    # -- for tests

    @property
    def state(self) -> AccessState | None:
        """What the panel last learnt."""
        return self._state

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for the call under way."""
        return self._work.wait(timeout)
