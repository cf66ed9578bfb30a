"""Which MLflow runs and models used a feature view or a feature service.

A tracked notebook's session run names the feature views and services it read in two
tags (:mod:`hubforge.features.usage`). :func:`lineage_runs` finds those runs in the
experiments the person can see, newest first: through the platform's MLflow
(:func:`~.client.mlflow_client`), whose gate already limits what each person sees. With
each run come the models that it and its nested runs (the fits' child runs, and theirs)
logged (MLflow 3's logged models) or registered (model versions whose run is one of
them). :func:`lineage_html` renders the answer for the feature browser.

MLflow's search has no OR and its LIKE no escape: each name is one search whose pattern
matches the name's letters, digits, ``.`` and ``-`` as they are and any other character
with ``_`` (any one character); every run found is then checked against its tag as
:func:`~hubforge.features.usage.names_in` reads it, so a name is matched whole and
exactly, and a malformed tag matches nothing.
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from hubforge.contract import MLFLOW_URL_ENV
from hubforge.features.usage import SERVICES_TAG, VIEWS_TAG, names_in

from .client import PUBLIC_HUB_ENV, WidgetError, one_line

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "KINDS",
    "Lineage",
    "LineageModel",
    "LineageRun",
    "lineage_html",
    "lineage_runs",
    "mlflow_ui_url",
    "tag_filter",
]

log = logging.getLogger(__name__)

#: The catalog kinds that have runs, and the tag that names them.
KINDS = {"feature_view": VIEWS_TAG, "feature_service": SERVICES_TAG}
PARENT_TAG = "mlflow.parentRunId"
#: Experiments listed per page, and the most pages read (a person seeing more gets the first).
EXPERIMENT_PAGE, EXPERIMENT_PAGES = 1000, 10
#: Experiment ids per run search; run ids per model search.
CHUNK = 100
#: Runs per page of a tag search, and the most pages one search reads.
RUN_PAGE, RUN_PAGES = 200, 3
#: Nested runs read per parent, the deepest level read, and the most searches for them.
CHILD_PAGE, MAX_DEPTH, MAX_CHILD_SEARCHES = 500, 2, 60
MAX_LIMIT = 200
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LITERAL = re.compile(r"[^A-Za-z0-9.-]")


@dataclass(frozen=True)
class LineageModel:
    """A model of a run: a registered version (``version`` set) or a logged model (``model_id`` set)."""

    name: str
    run_id: str
    experiment_id: str = ""
    version: str = ""
    model_id: str = ""

    @property
    def registered(self) -> bool:
        return bool(self.version)


@dataclass(frozen=True)
class LineageRun:
    """A session run that read the view or service; ``via``: the services through which it did
    (empty when it named the view itself); ``models``: its and its nested runs' models."""

    run_id: str
    name: str
    experiment_id: str
    experiment: str
    user: str
    start_time: int | None
    status: str
    via: tuple[str, ...] = ()
    models: tuple[LineageModel, ...] = ()


@dataclass(frozen=True)
class Lineage:
    """The runs that used ``name`` (a ``kind`` of :data:`KINDS`), newest first; ``error``: why
    MLflow could not say (one line); ``more``: older runs left out; ``partial``: not all
    experiments or nested runs could be read."""

    kind: str
    name: str
    runs: tuple[LineageRun, ...] = ()
    error: str = ""
    more: bool = False
    partial: bool = False
    searched: int = 0  # experiments searched


def tag_filter(tag: str, name: str) -> str:
    """The MLflow search filter for runs whose ``tag`` may hold ``name`` (see the module)."""
    return f"tags.`{tag}` LIKE '%,{_LITERAL.sub('_', name)},%'"


def lineage_runs(
    client: MlflowClient, kind: str, name: str, limit: int = 20, *, via_services: Sequence[str] = ()
) -> Lineage:
    """The newest ``limit`` runs that read ``name``, a ``feature_view`` or a ``feature_service``
    (``kind``), and their models. Never raises for MLflow: its failure is the answer's ``error``.

    ``via_services``: for a view, the services that include it (the catalog's lineage):
    runs that read one of them read the view too. WidgetError for an unknown ``kind``.
    """
    tag = KINDS.get(kind)
    if tag is None:
        raise WidgetError(f"lineage: {kind!r} has no runs (only {', '.join(KINDS)})")
    wanted = [(tag, name, "")]
    if kind == "feature_view":
        services = [via_services] if isinstance(via_services, str) else via_services
        wanted += [(SERVICES_TAG, service, service) for service in dict.fromkeys(services) if service]
    limit = max(1, min(int(limit), MAX_LIMIT))
    try:
        return _lineage(client, kind, name, [w for w in wanted if w[1]], limit)
    except Exception as exc:  # the browser shows one line, never a traceback
        log.debug("hubforge lineage: %s %s", kind, name, exc_info=True)
        return Lineage(kind, name, error=f"cannot read MLflow: {_mlflow_error(exc)}")


def _mlflow_error(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return one_line(str(message).split("\n")[0], 240)


def _lineage(client: Any, kind: str, name: str, wanted: list[tuple[str, str, str]], limit: int) -> Lineage:
    experiments, partial = _experiments(client)
    found: dict[str, tuple[Any, list[str]]] = {}
    for tag, value, via in wanted:
        for run in _tagged_runs(client, list(experiments), tag, value, limit):
            run_id = run.info.run_id
            found.setdefault(run_id, (run, []))[1].append(via)
    newest = sorted(found.values(), key=lambda pair: -(pair[0].info.start_time or 0))
    more, newest = len(newest) > limit, newest[:limit]
    trees, cut = _descendants(client, [run for run, _ in newest])
    models = _models(client, [pair for tree in trees.values() for pair in tree])
    answer = [
        _lineage_run(run, experiments, vias, [m for r, _ in trees[run.info.run_id] for m in models.get(r, [])])
        for run, vias in newest
    ]
    return Lineage(kind, name, tuple(answer), more=more, partial=partial or cut, searched=len(experiments))


def _pages(search: Any, max_pages: int) -> Iterator[Any]:
    """The items of up to ``max_pages`` pages of ``search(page_token)``."""
    token = None
    for _ in range(max_pages):
        page = search(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _experiments(client: Any) -> tuple[dict[str, str], bool]:
    """The experiments the caller can see, id -> name; whether there were more than were read."""
    found: dict[str, str] = {}
    token = None
    for _ in range(EXPERIMENT_PAGES):
        page = client.search_experiments(max_results=EXPERIMENT_PAGE, page_token=token)
        found.update((str(e.experiment_id), str(e.name)) for e in page)
        token = getattr(page, "token", None)
        if not token:
            return found, False
    return found, True


def _chunks(values: Sequence[str], size: int = CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _tagged_runs(client: Any, experiment_ids: list[str], tag: str, name: str, limit: int) -> list[Any]:
    """The newest ``limit`` + 1 runs of each chunk of experiments whose ``tag`` holds ``name`` exactly."""
    query = tag_filter(tag, name)
    found = []
    for chunk in _chunks(experiment_ids):

        def search(token: str | None, chunk: list[str] = chunk) -> Any:
            return client.search_runs(
                chunk, query, max_results=RUN_PAGE, order_by=["attributes.start_time DESC"], page_token=token
            )

        matched = 0
        for run in _pages(search, RUN_PAGES):
            if name in names_in(run.data.tags.get(tag)):
                found.append(run)
                matched += 1
                if matched > limit:
                    break
    return found


def _descendants(client: Any, runs: list[Any]) -> tuple[dict[str, list[tuple[str, str]]], bool]:
    """Each run's id -> (run id, experiment id) of it and of its nested runs; whether the
    searches ran out first. Level by level, the newest runs' first, at most
    :data:`MAX_CHILD_SEARCHES` searches."""
    trees = {run.info.run_id: [(run.info.run_id, str(run.info.experiment_id))] for run in runs}
    level = [(run.info.run_id, run.info.run_id, str(run.info.experiment_id)) for run in runs]
    searches, seen = 0, set(trees)
    for _ in range(MAX_DEPTH):
        below = []
        for root, parent, experiment_id in level:
            if not _ID.match(parent):
                continue
            if searches >= MAX_CHILD_SEARCHES:
                return trees, True
            searches += 1
            query = f"tags.`{PARENT_TAG}` = '{parent}'"
            for child in client.search_runs([experiment_id], query, max_results=CHILD_PAGE):
                child_id, child_experiment = child.info.run_id, str(child.info.experiment_id)
                if child_id not in seen:
                    seen.add(child_id)
                    trees[root].append((child_id, child_experiment))
                    below.append((root, child_id, child_experiment))
        level = below
    return trees, False


def _models(client: Any, runs: list[tuple[str, str]]) -> dict[str, list[LineageModel]]:
    """The models of ``runs`` ((run id, experiment id)) by run id: registered versions, then
    the logged models no version was made from."""
    experiment_of = {run_id: experiment_id for run_id, experiment_id in runs if _ID.match(run_id)}
    run_ids = list(experiment_of)
    if not run_ids:
        return {}
    versions = [v for chunk in _chunks(run_ids) for v in _search_versions(client, chunk)]
    made_from = {str(getattr(v, "model_id", "") or "") for v in versions}
    made_from |= {str(v.source).removeprefix("models:/") for v in versions if str(v.source).startswith("models:/")}
    made_from.discard("")
    found: dict[str, list[LineageModel]] = {}
    for v in sorted(versions, key=lambda v: (str(v.name), -_number(v.version))):
        model = LineageModel(str(v.name), str(v.run_id), experiment_of.get(v.run_id, ""), version=str(v.version))
        found.setdefault(v.run_id, []).append(model)
    for chunk in _chunks(run_ids):
        experiment_ids = sorted({experiment_of[run_id] for run_id in chunk})
        for logged in _search_logged(client, experiment_ids, chunk):
            if str(logged.model_id) not in made_from and logged.source_run_id in experiment_of:
                run_id = str(logged.source_run_id)
                model = LineageModel(str(logged.name), run_id, str(logged.experiment_id), model_id=str(logged.model_id))
                found.setdefault(run_id, []).append(model)
    return found


def _listed(run_ids: list[str]) -> str:
    return ", ".join(f"'{run_id}'" for run_id in run_ids)


def _search_versions(client: Any, run_ids: list[str]) -> list[Any]:
    query = f"run_id IN ({_listed(run_ids)})"
    return list(_pages(lambda token: client.search_model_versions(query, page_token=token), RUN_PAGES))


def _search_logged(client: Any, experiment_ids: list[str], run_ids: list[str]) -> list[Any]:
    query = f"source_run_id IN ({_listed(run_ids)})"
    return list(_pages(lambda token: client.search_logged_models(experiment_ids, query, page_token=token), RUN_PAGES))


def _number(version: Any) -> int:
    try:
        return int(version)
    except (TypeError, ValueError):
        return 0


def _lineage_run(
    run: Any, experiments: Mapping[str, str], vias: Sequence[str], models: list[LineageModel]
) -> LineageRun:
    info, tags = run.info, run.data.tags
    name = str(info.run_name or tags.get("mlflow.runName") or info.run_id[:8])
    experiment_id = str(info.experiment_id)
    return LineageRun(
        run_id=str(info.run_id),
        name=name,
        experiment_id=experiment_id,
        experiment=experiments.get(experiment_id, experiment_id),
        user=str(tags.get("mlflow.user") or info.user_id or ""),
        start_time=info.start_time if isinstance(info.start_time, int) else None,
        status=str(info.status or ""),
        via=tuple(sorted({v for v in vias if v})) if "" not in vias else (),
        models=tuple(models),
    )


# --- HTML ------------------------------------------------------------------------------

#: The kinds as the browser says them.
KIND_WORDS = {"feature_view": "feature view", "feature_service": "feature service"}
#: The most models listed under one run.
MAX_MODELS = 8


def mlflow_ui_url(environ: Mapping[str, str] | None = None) -> str:
    """Where the person's browser reaches the platform's MLflow UI, for :func:`lineage_html`'s links.

    The hub's MLflow path (``HUBFORGE_MLFLOW_URL``'s) on the hub's public origin when the
    server knows it, else as a path on the page's own origin (the hub's); "" without one.
    """
    env = os.environ if environ is None else environ
    url = env.get(MLFLOW_URL_ENV, "")
    if not url:
        return ""
    path = urlsplit(url).path.rstrip("/") + "/"
    public = urlsplit(env.get(PUBLIC_HUB_ENV, ""))
    if public.scheme in ("http", "https") and public.netloc:
        return f"{public.scheme}://{public.netloc}{path}"
    return path


def _base(url: str) -> str:
    """``url`` as the base of links: an http(s) URL or an absolute path; "" (no links) for anything else."""
    parts = urlsplit(url.strip())
    web = parts.scheme in ("http", "https") and bool(parts.netloc)
    path = not parts.scheme and not parts.netloc and parts.path.startswith("/")
    return parts._replace(query="", fragment="").geturl().rstrip("/") + "/" if web or path else ""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _link(base: str, route: Sequence[str], text: str) -> str:
    if not base:
        return _esc(text)
    href = base + "#/" + "/".join(quote(str(part), safe="") for part in route)
    return f'<a href="{_esc(href)}" target="_blank" rel="noopener noreferrer">{_esc(text)}</a>'


def _when(ms: int | None) -> str:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _model_html(model: LineageModel, base: str) -> str:
    if model.registered:
        return _link(base, ["models", model.name, "versions", model.version], f"{model.name} v{model.version}")
    route = ["experiments", model.experiment_id, "models", model.model_id]
    return _link(base if model.experiment_id else "", route, model.name) + " <small>(logged)</small>"


def _run_html(run: LineageRun, base: str) -> str:
    title = _link(base, ["experiments", run.experiment_id, "runs", run.run_id], run.name)
    facts = [run.experiment, run.user, _when(run.start_time)]
    if run.via:
        facts.append("via " + ", ".join(run.via))
    if run.status and run.status != "FINISHED":
        facts.append(run.status.lower())
    line = f"{title} <small>&middot; {' &middot; '.join(_esc(one_line(f)) for f in facts if f)}</small>"
    if run.models:
        shown = ", ".join(_model_html(m, base) for m in run.models[:MAX_MODELS])
        extra = len(run.models) - MAX_MODELS
        line += f"<br><small>models: {shown}{f' and {extra} more' if extra > 0 else ''}</small>"
    return f"<li>{line}</li>"


def lineage_html(lineage: Lineage, mlflow_url: str = "") -> str:
    """``lineage`` as a compact HTML list: each run (linked to its MLflow page when
    ``mlflow_url``, the MLflow UI's base, is given; see :func:`mlflow_ui_url`), its
    experiment, user, start and models; one line when there are none or MLflow failed."""
    what = f"{KIND_WORDS.get(lineage.kind, lineage.kind)} {lineage.name}"
    head = '<div style="margin:6px 0"><b>Runs and models:</b> '
    if lineage.error:
        message = one_line(f"cannot find the runs that used {what}: {lineage.error}", 400)
        return f'{head}<span style="color:#cf222e">{_esc(message)}</span></div>'
    cut = " <i>(some experiments or nested runs were not searched)</i>" if lineage.partial else ""
    if not lineage.runs:
        return f"{head}<i>no tracked run has used this {_esc(what)} yet.</i>{cut}</div>"
    base = _base(mlflow_url)
    count = len(lineage.runs)
    said = f"the newest {count} runs that used it" if lineage.more else f"{count} run{'s' * (count != 1)}, newest first"
    items = "".join(_run_html(run, base) for run in lineage.runs)
    return f'{head}{said}{cut}<ul style="margin:2px 0;padding-left:18px">{items}</ul></div>'
