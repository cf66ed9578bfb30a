"""Which feature views and services a notebook read, recorded on its MLflow session run.

A reader in a kernel (:class:`~.reader.OnlineFeatures`, the historical helper) calls
:func:`record_retrieval` after each read. The call costs microseconds and never raises:
it hands the retrieval to the recorder that the kernel's tracker installed
(:func:`set_recorder`, done by ``hubforge.server_extension.kernel`` when it loads) and
returns; without one (tracking off, a plain Python process) it does nothing, and this
module imports neither mlflow nor the tracker. The tracker counts the retrieval
(:meth:`FeatureUsage.note`: a retrieval seen before costs a dictionary lookup) and
queues a new one on its tracking queue, whose sender thread merges it
(:meth:`FeatureUsage.merge`) into the session run's tags:

- ``hubforge.features.views``: every feature view read so far, sorted, as ``,a,b,``
- ``hubforge.features.services``: every feature service read so far, the same way
- ``hubforge.features.project``: every Feast project named, the same way

With a delimiter at both ends, ``LIKE '%,name,%'`` matches one whole name
(:func:`names_in` reads a value back). A set that would pass MLflow's limit on a tag's
value keeps the names that fit and ends with a marker (``…12 more``). At the end of the
session the run gets ``features/retrievals.json`` too (:meth:`FeatureUsage.summary`).
``hubforge.widgets.feature_lineage`` finds the runs that read a view or a service.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MORE",
    "PROJECT_TAG",
    "SERVICES_TAG",
    "TAG_LIMIT",
    "VIEWS_TAG",
    "FeatureUsage",
    "Recorder",
    "Retrieval",
    "name_list",
    "names_in",
    "record_retrieval",
    "set_recorder",
]

log = logging.getLogger(__name__)

VIEWS_TAG = "hubforge.features.views"
SERVICES_TAG = "hubforge.features.services"
PROJECT_TAG = "hubforge.features.project"
#: MLflow's limit on a tag's value (``mlflow.utils.validation.MAX_TAG_VAL_LENGTH``).
TAG_LIMIT = 8000
#: Starts the last entry of a set cut to fit: ``,a,b,…12 more,``. No name starts with it.
MORE = "\N{HORIZONTAL ELLIPSIS}"
#: The most distinct retrievals a session keeps apart (each with its count); more are counted only.
MAX_DISTINCT = 10_000
#: The most features of one retrieval that the summary lists.
MAX_FEATURES = 200
#: The longest name a tag holds (MLflow's limit on a key, as a sane bound on a name).
MAX_NAME = 250
_UNTAGGABLE = re.compile(r"[,\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Retrieval:
    """One read of feature values: ``kind`` ("online", "historical"), the views, services and
    features (``view:feature``) it named, and the Feast project ("" when the reader does not know it)."""

    kind: str
    views: tuple[str, ...]
    services: tuple[str, ...]
    features: tuple[str, ...] = ()
    project: str = ""


#: What the kernel's tracker installs: takes a retrieval, returns at once.
Recorder = Callable[[Retrieval], None]
_recorder: Recorder | None = None


def set_recorder(recorder: Recorder | None) -> None:
    """Install the function :func:`record_retrieval` hands retrievals to (None: record nothing).

    ``hubforge.server_extension.kernel`` installs its tracker's ``record_features`` on load,
    e.g. ``set_recorder(tracker.record_features)``; it must return at once and may raise
    (:func:`record_retrieval` swallows it).
    """
    global _recorder
    _recorder = recorder


def record_retrieval(
    kind: str, views: Iterable[str], services: Iterable[str], features: Iterable[str] = (), project: str = ""
) -> None:
    """Record on the notebook's run that feature values were read; never raises, never waits.

    ``views`` and ``services``: the feature views and services read; the views that
    ``features`` (``view:feature`` references) name count as read too. ``project``: the
    Feast project, if known. Without a tracking kernel this does nothing.
    """
    recorder = _recorder
    if recorder is None:
        return
    try:
        found = _names(features)
        read = _names(views, (ref.partition(":")[0] for ref in found if ":" in ref))
        recorder(Retrieval(str(kind), read, _names(services), found[:MAX_FEATURES], str(project or "")))
    except Exception:  # a read must never fail because of its record
        log.debug("hubforge: a feature retrieval could not be recorded", exc_info=True)


def _names(*groups: Iterable[str]) -> tuple[str, ...]:
    """The non-empty strings of ``groups``, first occurrence first; one string is one name."""
    seen: dict[str, None] = {}
    for group in groups:
        for name in (group,) if isinstance(group, str) else group or ():
            if isinstance(name, str) and name:
                seen[name] = None
    return tuple(seen)


def _taggable(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and not name.startswith(MORE) and not _UNTAGGABLE.search(name)


def name_list(names: Iterable[str], limit: int = TAG_LIMIT) -> str:
    """``names`` as a tag value: sorted, unique, ``,a,b,`` ("" for none), at most ``limit`` characters.

    Names a delimited list cannot hold (a comma, a control character, too long) are left
    out; when the rest does not fit, the first names in order that do are kept and a last
    entry says how many were left out (``,a,b,…12 more,``).
    """
    kept = sorted({name for name in names if isinstance(name, str) and _taggable(name)})
    if not kept:
        return ""
    value = "," + ",".join(kept) + ","
    if len(value) <= limit:
        return value
    room = limit - len(f"{MORE}{len(kept)} more,")
    value = ","
    for count, name in enumerate(kept):
        if len(value) + len(name) + 1 > room:
            return f"{value}{MORE}{len(kept) - count} more,"
        value += name + ","
    return value  # unreachable: the whole list did not fit


def names_in(value: Any) -> set[str]:
    """The names a tag value written by :func:`name_list` holds; nothing for a value of another shape
    (not a string, or not delimited at both ends: no search by :func:`name_list`'s pattern finds it)."""
    if not isinstance(value, str) or not (value.startswith(",") and value.endswith(",")):
        return set()
    return {part for part in value.split(",") if part and not part.startswith(MORE)}


class FeatureUsage:
    """What one session read: noted on the reader's thread, merged on the tracking queue's sender.

    :meth:`note` is the reader's side (a lock and a dictionary lookup); :meth:`merge` the
    sender's, called once for each retrieval :meth:`note` saw first; :meth:`summary` is
    read when the session ends.
    """

    def __init__(self, max_distinct: int = MAX_DISTINCT) -> None:
        self.max_distinct = max_distinct
        self._lock = threading.Lock()
        self._counts: dict[Retrieval, int] = {}
        self._not_kept = 0  # retrievals past max_distinct: counted, not merged
        self._names: dict[str, set[str]] = {VIEWS_TAG: set(), SERVICES_TAG: set(), PROJECT_TAG: set()}
        self._sent: dict[str, str] = {}

    def note(self, retrieval: Retrieval) -> bool:
        """Count ``retrieval``; True when it is new, and so to be merged."""
        with self._lock:
            count = self._counts.get(retrieval)
            if count is not None:
                self._counts[retrieval] = count + 1
                return False
            if len(self._counts) >= self.max_distinct:
                self._not_kept += 1
                return False
            self._counts[retrieval] = 1
            return True

    def merge(self, retrieval: Retrieval) -> dict[str, str]:
        """Add the names of ``retrieval``; the tags whose value this changed, with their new value."""
        with self._lock:
            self._names[VIEWS_TAG].update(retrieval.views)
            self._names[SERVICES_TAG].update(retrieval.services)
            if retrieval.project:
                self._names[PROJECT_TAG].add(retrieval.project)
            changed = {}
            for tag, names in self._names.items():
                value = name_list(names)
                if value and self._sent.get(tag) != value:
                    changed[tag] = self._sent[tag] = value
            return changed

    def summary(self) -> dict[str, Any]:
        """What ``features/retrievals.json`` holds; {} when nothing was read."""
        with self._lock:
            if not self._counts and not self._not_kept:
                return {}
            retrievals = [
                {
                    "kind": r.kind,
                    "project": r.project,
                    "views": list(r.views),
                    "services": list(r.services),
                    "features": list(r.features),
                    "count": count,
                }
                for r, count in self._counts.items()
            ]
            return {
                "views": sorted({view for r in self._counts for view in r.views}),
                "services": sorted({service for r in self._counts for service in r.services}),
                "projects": sorted({r.project for r in self._counts if r.project}),
                "retrievals": retrievals,
                "not_listed": self._not_kept,
            }
