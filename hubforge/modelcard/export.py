"""A card in other formats: Model Card Toolkit JSON, a Hugging Face README, an HTML page.

Each export validates the card first (:func:`~hubforge.modelcard.card.check_card`) and
is a pure function of it. Markdown fields reach HTML only through
:func:`render_markdown`: markdown-it-py with raw HTML off, then nh3 with a short
allow-list (no script, no ``on*`` attributes, only http, https and mailto links);
everything else in the page is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jinja2
import nh3
import yaml
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markupsafe import Markup

from .card import check_card

__all__ = [
    "MCT_SCHEMA_VERSION",
    "mct_schema",
    "render_markdown",
    "sanitize_html",
    "to_html",
    "to_huggingface",
    "to_mct",
]

#: The Model Card Toolkit schema version :func:`to_mct` writes (vendored in vendor/model_card_toolkit).
MCT_SCHEMA_VERSION = "0.0.2"

_TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code"}
_TAGS |= {"em", "strong", "del", "s", "a", "table", "thead", "tbody", "tr", "th", "td"}
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"style"}, "td": {"style"}}
#: Licenses Hugging Face lists by the lowercase of their SPDX id; others export as "other".
_HF_LICENSES = frozenset(
    {
        *("apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "isc", "zlib", "unlicense"),
        *("cc0-1.0", "cc-by-2.0", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nd-4.0"),
        *("cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-4.0"),
        *("gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0", "agpl-3.0", "mpl-2.0", "epl-1.0", "epl-2.0"),
        *("bsl-1.0", "artistic-2.0", "afl-3.0", "wtfpl", "ofl-1.1", "postgresql", "ncsa", "ms-pl", "osl-3.0"),
        *("eupl-1.1", "eupl-1.2"),
    }
)


@cache
def mct_schema() -> dict[str, Any]:
    """The vendored Model Card Toolkit JSON schema v0.0.2 (draft-07); shared, do not modify it."""
    path = "vendor/model_card_toolkit/model_card.schema.json"
    data: dict[str, Any] = json.loads(resources.files(__package__).joinpath(path).read_text(encoding="utf-8"))
    return data


# --- Model Card Toolkit -------------------------------------------------------------


def to_mct(card: Mapping[str, Any]) -> dict[str, Any]:
    """The card as Model Card Toolkit JSON (schema v0.0.2).

    MCT has no governance fields, so they go where MCT readers look: intended use to
    ``considerations.use_cases``, out-of-scope use to ``limitations``, the risk rating
    and the fairness summary to ``ethical_considerations``, fairness evaluations to
    sliced ``performance_metrics``, training datasets and Feast feature views to
    ``model_parameters.data``. Hyperparameters, the task and metrics' datasets have no
    MCT field and are left out. Numbers become strings, as MCT's schema types them.
    """
    check_card(card)
    out = {
        "schema_version": MCT_SCHEMA_VERSION,
        "model_details": {key: card["model_details"].get(key) for key in _MCT_DETAILS},
        "model_parameters": _mct_parameters(card),
        "quantitative_analysis": {"performance_metrics": _mct_metrics(card)},
        "considerations": _mct_considerations(card),
    }
    pruned: dict[str, Any] = _pruned(out)
    return pruned


_MCT_DETAILS = ("name", "overview", "documentation", "owners", "version", "licenses", "references", "citations")


def _mct_parameters(card: Mapping[str, Any]) -> dict[str, Any]:
    params, training = card.get("model_parameters", {}), card.get("training_data", {})
    data = [_mct_dataset(d) for d in training.get("datasets", [])]
    data += [_mct_feature_view(view) for view in training.get("feature_views", [])]
    data += [_mct_dataset(d) for d in params.get("data", [])]
    out = {key: params.get(key) for key in ("model_architecture", "input_format", "output_format")}
    return {**out, "data": data}


def _mct_dataset(dataset: Mapping[str, Any]) -> dict[str, Any]:
    facts = [f"{key}: {dataset[key]}" for key in ("split", "source", "digest") if dataset.get(key)]
    description = "\n\n".join(filter(None, [dataset.get("description"), "; ".join(facts)]))
    sensitive = {"sensitive_data": dataset.get("sensitive_data")}
    return {"name": dataset["name"], "link": dataset.get("link"), "description": description, "sensitive": sensitive}


def _mct_feature_view(view: Mapping[str, Any]) -> dict[str, Any]:
    features = ", ".join(view.get("features", []))
    text = f"Feast feature view {view['name']} of project {view['project']}" + (f": {features}" if features else "")
    return {"name": f"{view['project']}/{view['name']}", "description": text}


def _mct_metrics(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for metric in card.get("quantitative_analysis", {}).get("performance_metrics", []):
        interval = metric.get("confidence_interval")
        bounds = {key: _number_text(value) for key, value in interval.items()} if interval else None
        out.append({"type": metric["type"], "value": _number_text(metric["value"]), "slice": metric.get("slice")})
        out[-1]["confidence_interval"] = bounds
    for evaluation in card.get("fairness", {}).get("evaluations", []):
        group = evaluation["group"] + (f"={evaluation['slice']}" if evaluation.get("slice") else "")
        out.append({"type": evaluation["metric"], "value": _number_text(evaluation["value"]), "slice": group})
    return out


def _mct_considerations(card: Mapping[str, Any]) -> dict[str, Any]:
    given = card.get("considerations", {})
    out = {key: list(given.get(key, [])) for key in ("users", "use_cases", "limitations", "tradeoffs")}
    if card.get("intended_use"):
        out["use_cases"].insert(0, {"description": card["intended_use"]})
    if card.get("out_of_scope_use"):
        out["limitations"].insert(0, {"description": f"Out of scope: {card['out_of_scope_use']}"})
    risks = list(given.get("ethical_considerations", []))
    if card.get("risk_rating"):
        risks.insert(0, {"name": f"Risk rating: {card['risk_rating']}", "mitigation_strategy": card.get("risk_notes")})
    if card.get("fairness", {}).get("summary"):
        risks.append({"name": "Bias and fairness", "mitigation_strategy": card["fairness"]["summary"]})
    return {**out, "ethical_considerations": risks}


def _number_text(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _pruned(value: Any) -> Any:
    """``value`` without empty texts, lists, objects and None, at any depth."""
    if isinstance(value, dict):
        value = {key: _pruned(item) for key, item in value.items()}
        return {key: item for key, item in value.items() if item not in (None, "", [], {})}
    if isinstance(value, list):
        return [item for item in map(_pruned, value) if item not in (None, "", [], {})]
    return value


# --- Hugging Face -------------------------------------------------------------------


def to_huggingface(card: Mapping[str, Any]) -> str:
    """The card as a Hugging Face README.md: YAML front matter, then markdown sections.

    The metadata holds the license (``other`` with ``license_name`` for expressions,
    custom texts and licenses Hugging Face does not list), tags, training dataset
    names, metric names, ``pipeline_tag`` (the task) and a ``model-index`` with every
    performance metric (a slice goes into the metric's ``name``). Raw HTML in the
    card's markdown is escaped, as :func:`to_html` shows it: as text.
    """
    check_card(card)
    front = yaml.safe_dump(_hf_metadata(card), sort_keys=False, allow_unicode=True, default_flow_style=False)
    sections = [_hf_title(card), *(builder(card) for builder in _HF_SECTIONS)]
    return f"---\n{front}---\n\n" + "\n\n".join(section for section in sections if section) + "\n"


def _hf_metadata(card: Mapping[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = _hf_license(card.get("model_details", {}).get("licenses", []))
    risk = [f"risk-{card['risk_rating']}"] if card.get("risk_rating") else []
    meta["tags"] = ["hubforge", "model-card", *risk]
    datasets = [d["name"] for d in card.get("training_data", {}).get("datasets", [])]
    metrics = [m["type"] for m in card.get("quantitative_analysis", {}).get("performance_metrics", [])]
    meta.update({"datasets": list(dict.fromkeys(datasets)), "metrics": list(dict.fromkeys(metrics))})
    task = card.get("model_parameters", {}).get("task")
    if task:
        meta["pipeline_tag"] = task
    if metrics:
        meta["model-index"] = [{"name": card["model_details"]["name"], "results": _hf_results(card, task or "other")}]
    return {key: value for key, value in meta.items() if value not in ([], None)}


def _hf_license(licenses: list[Mapping[str, str]]) -> dict[str, Any]:
    if not licenses:
        return {}
    identifier = licenses[0].get("identifier", "").strip().lower()
    if len(licenses) == 1 and identifier:
        for spelling in (identifier, identifier.removesuffix("-only")):
            if spelling in _HF_LICENSES:
                return {"license": spelling}
    names = [lic.get("identifier") or "custom" for lic in licenses]
    return {"license": "other", "license_name": _slug(" ".join(names))}


def _hf_results(card: Mapping[str, Any], task: str) -> list[dict[str, Any]]:
    """model-index results: one per dataset the metrics name (or "unspecified")."""
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for metric in card["quantitative_analysis"]["performance_metrics"]:
        name = f"{metric['type']} ({metric['slice']})" if metric.get("slice") else metric["type"]
        entry = {"type": metric["type"], "value": metric["value"], "name": name}
        by_dataset.setdefault(metric.get("dataset", "unspecified"), []).append(entry)
    return [
        {"task": {"type": task}, "dataset": {"name": dataset, "type": _slug(dataset)}, "metrics": metrics}
        for dataset, metrics in by_dataset.items()
    ]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unnamed"


def _text(value: str) -> str:
    """Card markdown for the README: raw HTML escaped, so it reads as text there too."""
    return value.replace("<", "&lt;")


def _cell(value: Any) -> str:
    return _text(" ".join(str(value).split())).replace("|", "\\|") if value not in (None, "") else ""


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _section(title: str, *parts: str | None) -> str:
    body = [part for part in parts if part]
    return "\n\n".join([f"## {title}", *body]) if body else ""


def _items(entries: Iterable[Mapping[str, Any]], key: str = "description") -> str:
    return "\n".join(f"- {_cell(entry.get(key))}" for entry in entries)


def _hf_title(card: Mapping[str, Any]) -> str:
    details = card["model_details"]
    return "\n\n".join(filter(None, [f"# {_cell(details['name'])}", _text(details.get("overview", ""))]))


def _hf_details(card: Mapping[str, Any]) -> str:
    details, params = card["model_details"], card.get("model_parameters", {})
    licenses = details.get("licenses", [])
    facts = {
        "Owners": ", ".join(_owner(owner) for owner in details.get("owners", [])),
        "Version": _version(details.get("version", {})),
        "License": ", ".join(_cell(lic.get("identifier") or "custom (below)") for lic in licenses),
        "Task": _cell(params.get("task")),
    }
    lines = "\n".join(f"- **{label}:** {value}" for label, value in facts.items() if value)
    architecture = params.get("model_architecture") and "### Architecture\n\n" + _text(params["model_architecture"])
    customs = [f"### License\n\n{_text(lic['custom_text'])}" for lic in licenses if lic.get("custom_text")]
    return _section("Model details", lines, _text(details.get("documentation", "")), architecture, *customs)


def _owner(owner: Mapping[str, str]) -> str:
    return _cell(owner["name"]) + (f" ({_cell(owner['contact'])})" if owner.get("contact") else "")


def _version(version: Mapping[str, str]) -> str:
    return _cell(version.get("name")) + (f" ({version['date']})" if version.get("date") else "")


def _hf_uses(card: Mapping[str, Any]) -> str:
    given = card.get("considerations", {})
    intended = _section("Intended use", _text(card.get("intended_use", "")), _items(given.get("use_cases", [])))
    users = _section("Users", _items(given.get("users", [])))
    out_of_scope = _section("Out-of-scope use", _text(card.get("out_of_scope_use", "")))
    return "\n\n".join(filter(None, [intended, users, out_of_scope]))


def _hf_training(card: Mapping[str, Any]) -> str:
    training = card.get("training_data", {})
    rows = [(d["name"], d.get("split"), d.get("source"), d.get("digest")) for d in training.get("datasets", [])]
    views = [(v["project"], v["name"], ", ".join(v.get("features", []))) for v in training.get("feature_views", [])]
    datasets = _table(["Dataset", "Split", "Source", "Digest"], rows) if rows else ""
    features = _table(["Feast project", "Feature view", "Features"], views) if views else ""
    return _section("Training data", _text(training.get("description", "")), datasets, features)


def _hf_evaluation(card: Mapping[str, Any]) -> str:
    metrics = card.get("quantitative_analysis", {}).get("performance_metrics", [])
    rows = [(m["type"], m["value"], m.get("slice"), m.get("dataset"), _interval(m)) for m in metrics]
    table = _table(["Metric", "Value", "Slice", "Dataset", "Confidence interval"], rows) if rows else ""
    data = card.get("model_parameters", {}).get("data", [])
    datasets = _table(["Dataset", "Split", "Source"], [(d["name"], d.get("split"), d.get("source")) for d in data])
    return _section("Evaluation", table, datasets if data else "")


def _interval(metric: Mapping[str, Any]) -> str:
    interval = metric.get("confidence_interval")
    return f"[{interval['lower_bound']}, {interval['upper_bound']}]" if interval else ""


def _hf_fairness(card: Mapping[str, Any]) -> str:
    fairness = card.get("fairness", {})
    evaluations = fairness.get("evaluations", [])
    rows = [(e["group"], e.get("slice"), e["metric"], e["value"], e.get("notes")) for e in evaluations]
    table = _table(["Group", "Slice", "Metric", "Value", "Notes"], rows) if rows else ""
    return _section("Bias and fairness", _text(fairness.get("summary", "")), table)


def _hf_risks(card: Mapping[str, Any]) -> str:
    given = card.get("considerations", {})
    rating = f"**Risk rating:** {card['risk_rating']}" if card.get("risk_rating") else ""
    risks = given.get("ethical_considerations", [])
    ethical = "\n".join(f"- **{_cell(r['name'])}:** {_cell(r.get('mitigation_strategy'))}" for r in risks)
    risk = _section("Risk", rating, _text(card.get("risk_notes", "")))
    limits = _section("Limitations", _items(given.get("limitations", [])))
    tradeoffs = _section("Trade-offs", _items(given.get("tradeoffs", [])))
    return "\n\n".join(filter(None, [risk, limits, tradeoffs, _section("Ethical considerations", ethical)]))


def _hf_references(card: Mapping[str, Any]) -> str:
    details = card["model_details"]
    links = "\n".join(f"- <{r['reference']}>" for r in details.get("references", []))
    citations = [_fenced(c["citation"], c.get("style", "")) for c in details.get("citations", [])]
    return "\n\n".join(filter(None, [_section("References", links), _section("Citation", *citations)]))


def _fenced(text: str, info: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{_slug(info) if info else ''}\n{text}\n{fence}"


_HF_SECTIONS = (_hf_details, _hf_uses, _hf_training, _hf_evaluation, _hf_fairness, _hf_risks, _hf_references)


# --- HTML ---------------------------------------------------------------------------


@cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    # Images are not shown (a card page fetches nothing): their alt text stands in.
    md.add_render_rule("image", _image_as_text)
    return md


def _image_as_text(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    alt = renderer.renderInlineAsText(tokens[idx].children or [], options, env)
    return f"[image: {escapeHtml(alt)}]" if alt else ""


def sanitize_html(html: str) -> str:
    """``html`` keeping only text formatting, tables and http/https/mailto links."""
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags={"script", "style"},
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        url_relative="deny",
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )


def render_markdown(text: str) -> str:
    """Card markdown as safe HTML: raw HTML shown as text, then :func:`sanitize_html`."""
    return sanitize_html(_markdown().render(text))


def _http_url(value: str) -> str | None:
    return value if isinstance(value, str) and urlsplit(value).scheme in ("http", "https") else None


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hubforge.modelcard", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["markdown"] = lambda text: Markup(render_markdown(text or ""))
    env.filters["http_url"] = _http_url
    return env


def to_html(card: Mapping[str, Any]) -> str:
    """The card as a standalone HTML page (no scripts; a CSP that allows none)."""
    check_card(card)
    return _environment().get_template("card.html").render(card=card)
