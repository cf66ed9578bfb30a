"""Published apps: their records in SQLite or PostgreSQL, their frozen notebooks on disk.

An app is named ``<owner>/<name>``: two people's apps never share a name, and asking
for someone's app reveals nothing about names one cannot see. Each publish adds a
version; the app's ``current`` version is what the gallery shows and Voila runs, and
rolling back points it at an older one. Unpublishing takes the app out of the gallery
(``current`` is none) and keeps its versions for the record; publishing again adds
the next version.

Notebooks and thumbnails are stored by their sha256 (``<digest>.ipynb``), written to
a temporary file, flushed and renamed before the row that names them is committed:
a crash leaves at most an unreferenced file, never a row without its notebook.

Who sees an app: its owner, the people it is shared with (``user:<name>``) and the
members of the hub groups it is shared with (``group:<name>``). Everybody else gets
the same :class:`AppNotFound` for it as for an app that does not exist. Only the owner
changes an app; a platform admin may also unpublish one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from hubforge.errors import Forbidden, Invalid, NotFound, StoreError
from hubforge.files import replace_durably

from .notebooks import Inspected

__all__ = [
    "MAX_DESCRIPTION",
    "MAX_SHARES",
    "AppNotFound",
    "AppRecord",
    "AppStore",
    "Version",
    "parse_shares",
]

NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
MAX_TITLE = 120
MAX_DESCRIPTION = 2000
MAX_SHARES = 100
MAX_PRINCIPAL = 255
SHARE_KINDS = ("group", "user")
_LIKE_SPECIAL = re.compile(r"[\\%_]")

metadata = sa.MetaData()
apps = sa.Table(
    "apps_apps",
    metadata,
    sa.Column("owner", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(MAX_TITLE), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("current", sa.Integer, nullable=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
)
versions = sa.Table(
    "apps_versions",
    metadata,
    sa.Column("owner", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("kernel", sa.String(255), nullable=False),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("thumbnail", sa.String(100), nullable=True),  # "<media type> <digest>"
    sa.Column("published", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["owner", "name"], ["apps_apps.owner", "apps_apps.name"]),
)
shares = sa.Table(
    "apps_shares",
    metadata,
    sa.Column("owner", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("principal", sa.String(MAX_PRINCIPAL), primary_key=True),
    sa.ForeignKeyConstraint(["owner", "name"], ["apps_apps.owner", "apps_apps.name"]),
    sa.Index("ix_apps_shares_principal", "kind", "principal"),
)


class AppNotFound(NotFound):
    """No such app, or none the caller may see (one answer for both)."""


@dataclass(frozen=True)
class Version:
    """One published version of an app."""

    version: int
    digest: str
    size: int
    kernel: str
    parameters: list[dict[str, str]]
    thumbnail: str | None
    published: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "digest": self.digest,
            "size": self.size,
            "kernel": self.kernel,
            "parameters": self.parameters,
            "thumbnail": self.thumbnail is not None,
            "published": self.published.isoformat(),
        }


@dataclass(frozen=True)
class AppRecord:
    """An app as the gallery shows it: its current version (None once unpublished)."""

    owner: str
    name: str
    title: str
    description: str
    created: datetime
    updated: datetime
    current: Version | None
    shares: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}"

    def as_json(self, *, for_owner: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "owner": self.owner,
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "version": self.current.version if self.current else None,
            "published": self.current is not None,
            "updated": self.updated.isoformat(),
            "parameters": self.current.parameters if self.current else [],
            "kernel": self.current.kernel if self.current else None,
            "thumbnail": bool(self.current and self.current.thumbnail),
        }
        if for_owner:  # whom it is shared with is the owner's business
            out["shared_with"] = list(self.shares)
        return out


def parse_shares(entries: Iterable[Any]) -> tuple[str, ...]:
    """``group:NAME`` / ``user:NAME`` entries (a bare NAME is a group), normalised and sorted."""
    out = set()
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise Invalid("each share is a text: group:NAME, user:NAME or a group's NAME")
        kind, sep, principal = entry.strip().partition(":")
        if not sep:
            kind, principal = "group", kind
        if kind not in SHARE_KINDS:
            raise Invalid(f"share {entry[:80]!r}: the kind must be group or user")
        if not principal or len(principal) > MAX_PRINCIPAL or not principal.isprintable():
            raise Invalid(f"share {entry[:80]!r}: the name must be 1 to {MAX_PRINCIPAL} printable characters")
        out.add(f"{kind}:{principal}")
    if len(out) > MAX_SHARES:
        raise Invalid(f"an app is shared with at most {MAX_SHARES} groups and people")
    return tuple(sorted(out))


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise Invalid(
            "an app's name is 1 to 64 lower-case letters, digits and dashes, starting and ending with a letter or digit"
        )
    return name


def _text(value: Any, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"{what} must be a text")
    if len(value) > limit:
        raise Invalid(f"{what} is longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{what} is not valid Unicode") from None
    if any(ch in value for ch in "\x00"):
        raise Invalid(f"{what} holds a NUL character")
    return value


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class AppStore:
    """Apps in the database at ``db_url``, their files under ``root``."""

    def __init__(self, db_url: str, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.engine = sa.create_engine(db_url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", lambda conn, _: conn.execute("PRAGMA foreign_keys=ON"))
        with self._errors():
            metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(f"the apps database failed: {type(exc).__name__}") from exc

    # -- files -------------------------------------------------------------------------

    def _write(self, digest: str, suffix: str, body: bytes) -> None:
        path = self.root / f"{digest}{suffix}"
        if not path.exists():  # stored by its digest: there already is the same
            replace_durably(path, body)

    def notebook_path(self, version: Version) -> Path:
        return self.root / f"{version.digest}.ipynb"

    def thumbnail(self, version: Version) -> tuple[str, bytes] | None:
        if not version.thumbnail:
            return None
        media, digest = version.thumbnail.split(" ", 1)
        return media, (self.root / f"{digest}.thumb").read_bytes()

    # -- reading -----------------------------------------------------------------------

    @staticmethod
    def _version(row: Any) -> Version:
        return Version(
            row.version,
            row.digest,
            row.size,
            row.kernel,
            json.loads(row.parameters),
            row.thumbnail,
            _aware(row.published),
        )

    def _records(self, conn: sa.Connection, where: Any) -> list[AppRecord]:
        query = (
            sa.select(apps, versions)
            .select_from(
                apps.outerjoin(
                    versions,
                    sa.and_(
                        versions.c.owner == apps.c.owner,
                        versions.c.name == apps.c.name,
                        versions.c.version == apps.c.current,
                    ),
                )
            )
            .where(where)
            .order_by(apps.c.updated.desc(), apps.c.owner, apps.c.name)
        )
        rows = conn.execute(query).all()
        shared: dict[tuple[str, str], list[str]] = {}
        if rows:
            keys = [(row.owner, row.name) for row in rows]
            found = conn.execute(sa.select(shares).where(sa.tuple_(shares.c.owner, shares.c.name).in_(keys))).all()
            for share in found:
                shared.setdefault((share.owner, share.name), []).append(f"{share.kind}:{share.principal}")
        return [
            AppRecord(
                row.owner,
                row.name,
                row.title,
                row.description,
                _aware(row.created),
                _aware(row.updated),
                self._version(row) if row.current is not None and row.digest is not None else None,
                tuple(sorted(shared.get((row.owner, row.name), []))),
            )
            for row in rows
        ]

    @staticmethod
    def _visible(viewer: str, groups: Iterable[str]) -> Any:
        """SQL: the apps ``viewer`` (in ``groups``) may see."""
        groups = sorted(set(groups))
        shared = sa.exists().where(
            shares.c.owner == apps.c.owner,
            shares.c.name == apps.c.name,
            sa.or_(
                sa.and_(shares.c.kind == "user", shares.c.principal == viewer),
                sa.and_(shares.c.kind == "group", shares.c.principal.in_(groups)) if groups else sa.false(),
            ),
        )
        return sa.or_(apps.c.owner == viewer, shared)

    def gallery(self, viewer: str, groups: Iterable[str], query: str = "") -> list[AppRecord]:
        """The published apps ``viewer`` may open, newest first; ``query`` narrows them to
        those whose title, name, owner or description holds every one of its words."""
        where = sa.and_(apps.c.current.is_not(None), self._visible(viewer, groups))
        for word in query.lower().split()[:10]:
            like = "%" + _LIKE_SPECIAL.sub(r"\\\g<0>", word) + "%"
            where = sa.and_(
                where,
                sa.or_(
                    *(
                        sa.func.lower(column).like(like, escape="\\")
                        for column in (apps.c.title, apps.c.name, apps.c.owner, apps.c.description)
                    )
                ),
            )
        with self._errors(), self.engine.connect() as conn:
            return self._records(conn, where)

    def mine(self, owner: str) -> list[AppRecord]:
        """Every app of ``owner``'s, published or not."""
        with self._errors(), self.engine.connect() as conn:
            return self._records(conn, apps.c.owner == owner)

    def get(self, owner: str, name: str, viewer: str, groups: Iterable[str]) -> AppRecord:
        """The app, if ``viewer`` may see it and it is published (its owner sees it either way)."""
        where = sa.and_(apps.c.owner == owner, apps.c.name == name, self._visible(viewer, groups))
        with self._errors(), self.engine.connect() as conn:
            found = self._records(conn, where)
        if not found or (found[0].current is None and owner != viewer):
            raise AppNotFound(f"no app {owner}/{name}")
        return found[0]

    def history(self, owner: str, name: str) -> list[Version]:
        """Every version of an app, newest first."""
        query = (
            sa.select(versions)
            .where(versions.c.owner == owner, versions.c.name == name)
            .order_by(versions.c.version.desc())
        )
        with self._errors(), self.engine.connect() as conn:
            return [self._version(row) for row in conn.execute(query).all()]

    # -- changing ----------------------------------------------------------------------

    def _owned(self, owner: str, name: str, caller: str) -> AppRecord:
        """The app, for its owner; Forbidden for anyone else (callers that must not tell
        whether an app exists check the caller may see it first)."""
        record = self.get(owner, name, owner, ())
        if record.owner != caller:
            raise Forbidden(f"only {owner} changes the app {owner}/{name}")
        return record

    def publish(
        self,
        owner: str,
        name: str,
        notebook: Inspected,
        *,
        title: str | None = None,
        description: str | None = None,
        share: Iterable[str] | None = None,
    ) -> AppRecord:
        """Publish ``notebook`` as ``owner``'s app ``name``: its first version, or the next.

        ``title``/``description``/``share`` left out keep what the app had (a new app: the
        notebook's first heading, nothing, and nobody besides its owner)."""
        check_name(name)
        title = _text(title, "the title", MAX_TITLE) if title is not None else None
        description = _text(description, "the description", MAX_DESCRIPTION) if description is not None else None
        shared = parse_shares(share) if share is not None else None
        digest = hashlib.sha256(notebook.body).hexdigest()
        self._write(digest, ".ipynb", notebook.body)
        thumbnail = None
        if notebook.thumbnail is not None:
            media, image = notebook.thumbnail
            image_digest = hashlib.sha256(image).hexdigest()
            self._write(image_digest, ".thumb", image)
            thumbnail = f"{media} {image_digest}"
        now = _now()
        params = json.dumps([p.as_json() for p in notebook.parameters])
        with self._errors():
            try:
                with self.engine.begin() as conn:
                    key = sa.and_(apps.c.owner == owner, apps.c.name == name)
                    row = conn.execute(sa.select(apps).where(key).with_for_update()).first()
                    if row is None:
                        conn.execute(
                            apps.insert().values(
                                owner=owner,
                                name=name,
                                title=title or notebook.title or name,
                                description=description or "",
                                current=None,
                                created=now,
                                updated=now,
                            )
                        )
                    latest = conn.execute(
                        sa.select(sa.func.max(versions.c.version)).where(
                            versions.c.owner == owner, versions.c.name == name
                        )
                    ).scalar()
                    version = (latest or 0) + 1
                    conn.execute(
                        versions.insert().values(
                            owner=owner,
                            name=name,
                            version=version,
                            digest=digest,
                            size=len(notebook.body),
                            kernel=notebook.kernel,
                            parameters=params,
                            thumbnail=thumbnail,
                            published=now,
                        )
                    )
                    changes: dict[str, Any] = {"current": version, "updated": now}
                    if title is not None and row is not None:
                        changes["title"] = title or notebook.title or name
                    if description is not None and row is not None:
                        changes["description"] = description
                    conn.execute(apps.update().where(key).values(**changes))
                    if shared is not None:
                        self._set_shares(conn, owner, name, shared)
            except IntegrityError as exc:
                # Two publishes of one app at once (SQLite has no row lock to wait on).
                raise StoreError("the app was published twice at once; publish again") from exc
        return self.get(owner, name, owner, ())

    @staticmethod
    def _set_shares(conn: sa.Connection, owner: str, name: str, shared: tuple[str, ...]) -> None:
        conn.execute(shares.delete().where(shares.c.owner == owner, shares.c.name == name))
        if shared:
            rows = [
                {"owner": owner, "name": name, "kind": kind, "principal": principal}
                for kind, _, principal in (entry.partition(":") for entry in shared)
            ]
            conn.execute(shares.insert(), rows)

    def update(
        self,
        owner: str,
        name: str,
        caller: str,
        *,
        title: str | None = None,
        description: str | None = None,
        share: Iterable[str] | None = None,
    ) -> AppRecord:
        """Change an app's title, description or sharing (its owner only)."""
        self._owned(owner, name, caller)
        changes: dict[str, Any] = {"updated": _now()}
        if title is not None:
            changes["title"] = _text(title, "the title", MAX_TITLE) or name
        if description is not None:
            changes["description"] = _text(description, "the description", MAX_DESCRIPTION)
        shared = parse_shares(share) if share is not None else None
        with self._errors(), self.engine.begin() as conn:
            conn.execute(apps.update().where(apps.c.owner == owner, apps.c.name == name).values(**changes))
            if shared is not None:
                self._set_shares(conn, owner, name, shared)
        return self.get(owner, name, owner, ())

    def rollback(self, owner: str, name: str, caller: str, version: Any) -> AppRecord:
        """Make ``version`` (an earlier or later one) the app's current version again."""
        self._owned(owner, name, caller)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise Invalid("version must be a whole number from 1")
        with self._errors(), self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(versions.c.version).where(
                    versions.c.owner == owner, versions.c.name == name, versions.c.version == version
                )
            ).first()
            if exists is None:
                raise Invalid(f"the app {owner}/{name} has no version {version}")
            conn.execute(
                apps.update().where(apps.c.owner == owner, apps.c.name == name).values(current=version, updated=_now())
            )
        return self.get(owner, name, owner, ())

    def unpublish(self, owner: str, name: str, caller: str, *, admin: bool = False) -> None:
        """Take the app out of the gallery; its versions stay on record."""
        if not admin:
            self._owned(owner, name, caller)
        with self._errors(), self.engine.begin() as conn:
            done = conn.execute(
                apps.update()
                .where(apps.c.owner == owner, apps.c.name == name, apps.c.current.is_not(None))
                .values(current=None, updated=_now())
            )
        if done.rowcount == 0 and admin:
            raise AppNotFound(f"no app {owner}/{name}")
