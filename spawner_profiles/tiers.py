"""What both tier spawners share: the catalog check of a request and its refusal.

:class:`TierSpawnerMixin` goes first in a spawner's bases
(``class LocalTierSpawner(TierSpawnerMixin, SimpleLocalProcessSpawner)``): it adds the
catalog traits, checks a request against the catalog before JupyterHub starts
anything (``apply_user_options``), answers a refusal with its 4xx, and passes the
tier's idle timeout to jupyter-server. Each spawner adds what only it checks (the
local one: the image's environment, the machine's GPUs) in ``check_user_options``.

JupyterHub saves a request's options as the server's defaults (``orm_spawner.user_options``,
shown on the admin page and reused by the next start without options) *before* the
spawner sees them. A request the catalog refuses must leave no trace there: a data
steward's forged request for the fine-tuning tier must not show them on that tier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import object_session
from tornado import web
from traitlets import Dict, HasTraits, Instance, Unicode, default

from hubforge.catalog import (
    Catalog,
    ValidatedChoice,
    check_choice,
    culling_args,
    interface_args,
    personas_for_groups,
)
from hubforge.errors import Refusal, http_answer
from hubforge.events.spool import open_spool

__all__ = ["SERVER_SCHEMA", "TierSpawnerMixin", "restore_saved_options"]

#: The audit event of a server spawned, refused or stopped.
SERVER_SCHEMA = "https://events.hubforge.dev/hub/server/v1"

if TYPE_CHECKING:  # what the mixin is used with, for the type checker
    from jupyterhub.spawner import Spawner as _SpawnerBase
else:  # at run time a mixin: JupyterHub refuses a Spawner subclass without start, stop, poll
    _SpawnerBase = HasTraits


def restore_saved_options(spawner: Any, accepted: dict[str, Any]) -> None:
    """Put ``accepted`` (the options of the last request not refused) back in the spawner and the hub's db."""
    spawner.user_options = dict(accepted)
    orm_spawner = getattr(spawner, "orm_spawner", None)
    if orm_spawner is None:
        return
    orm_spawner.user_options = dict(accepted)
    session = object_session(orm_spawner)
    if session is not None:
        session.commit()


def _check_before_start(spawner: TierSpawnerMixin, _options: dict[str, Any]) -> None:
    """``Spawner.apply_user_options``: HTTPError 400/403 unless the request may start."""
    spawner.check_user_options()


class TierSpawnerMixin(_SpawnerBase):
    """The tier plumbing of hubforge's spawners, mixed in before a JupyterHub spawner."""

    tier_catalog = Instance(
        Catalog,
        allow_none=True,
        config=True,
        help="The tier catalog (hubforge.catalog.load_catalog(cfg)). "
        "Every spawn request is checked against it; without one, every spawn is refused.",
    )
    group_personas = Dict(
        config=True,
        help="Hub group -> the personas it grants, as PlatformConfig.group_personas() returns.",
    )
    tier_choice = Instance(ValidatedChoice, allow_none=True, help="The checked choice of the last spawn.")
    audit_spool_dir = Unicode(
        "",
        config=True,
        help="Folder of the hub's audit event spool: spawns (done, failed, refused) and stops are "
        "recorded there. Empty: they are not.",
    )

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        # JupyterHub (5.3+) runs this before pre_spawn_hook and start(): the earliest point
        # to refuse, and the refusal reaches the REST caller as its 4xx.
        return _check_before_start

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The options of the last request not refused (JupyterHub loaded the saved ones).
        self._accepted_options: dict[str, Any] = dict(self.user_options or {})

    @property
    def catalog(self) -> Catalog:
        """The tier catalog; HTTPError 500 when the platform configured none."""
        if self.tier_catalog is None:
            raise web.HTTPError(500, "hubforge: no tier catalog is configured for the spawner")
        return self.tier_catalog

    def user_groups(self) -> list[str]:
        """The hub groups of this server's user."""
        return [group.name for group in getattr(self.user, "groups", [])]

    def user_personas(self) -> set[str]:
        """The personas those groups grant."""
        return personas_for_groups(self.group_personas, self.user_groups())

    def choose_tier(self) -> ValidatedChoice:
        """The request (``user_options``) checked against the catalog; ChoiceError if not allowed."""
        options = dict(self.user_options or {})
        slug = options.pop("profile", None)
        return check_choice(self.catalog, self.user_groups(), self.user_personas(), slug, options)

    def check_user_options(self) -> ValidatedChoice:
        """The checked choice, kept as ``tier_choice``; HTTPError 4xx if refused.

        Spawners extend :meth:`check_choice` with what only they check.
        """
        try:
            choice = self.check_choice(self.choose_tier())
        except Refusal as exc:
            self.log.warning("Refusing spawn for %s: %s", self._log_name, exc)
            self.audit_server("spawn", "denied")
            restore_saved_options(self, self._accepted_options)  # JupyterHub saved the refused ones
            raise web.HTTPError(*http_answer(exc)) from exc
        self.tier_choice = choice
        self._accepted_options = dict(self.user_options or {})
        return choice

    def audit_server(self, action: str, outcome: str) -> None:
        """Record ``action`` (spawn, stop) of this server with its ``outcome`` and tier."""
        spool = open_spool(self.audit_spool_dir, "hub") if self.audit_spool_dir else None
        if spool is None:
            return
        choice = self.tier_choice
        asked = self.user_options or {}
        spool.emit(
            SERVER_SCHEMA,
            {
                "user": self.user.name,
                "action": action,
                "resource": {"type": "server", "id": f"{self.user.name}/{self.name}"},
                "outcome": outcome,
                "origin": {"observer": "hub", "server": f"{self.user.name}/{self.name}"},
                "server_name": self.name,
                "tier": choice.tier.slug if choice else str(asked.get("profile") or ""),
                "image": choice.image_key if choice else str(asked.get("image") or ""),
                "gpus": choice.gpus if choice else 0,
            },
        )

    def check_choice(self, choice: ValidatedChoice) -> ValidatedChoice:
        """What this spawner checks beyond the catalog: the choice to start, or a Refusal."""
        return choice

    def get_args(self) -> list[str]:
        """The server's arguments, plus the tier's idle timeout and interface for jupyter-server."""
        # A copy: JupyterHub's is the ``args`` trait itself. A second start on this spawner (a port
        # retry; the person's next try after a failed start, which the hub keeps the spawner for)
        # would otherwise pass each option twice, and the server refuses that.
        args = list(super().get_args())
        if self.tier_choice is not None:
            args += culling_args(self.tier_choice.tier) + interface_args(self.tier_choice.tier)
        return args
