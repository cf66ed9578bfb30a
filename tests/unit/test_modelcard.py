"""Model cards as pure data (hubforge.modelcard): validation, completeness, canonical form, exports.

Storage in a real MLflow server is tested in tests/integration/test_modelcard_mlflow.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import hubforge.modelcard
from hubforge.errors import Invalid
from hubforge.modelcard import (
    MAX_CARD_BYTES,
    PRODUCTION_FIELDS,
    InvalidCard,
    canonical_json,
    card_digest,
    check_card,
    completeness,
    empty_card,
    mct_schema,
    mlflow_store,
    parse_card,
    render_markdown,
    sanitize_html,
    schema,
    spdx_problem,
    to_html,
    to_huggingface,
    to_mct,
    validate_card,
)

PACKAGE = Path(hubforge.modelcard.__file__).parent

FULL: dict[str, Any] = {
    "schema_version": "1",
    "model_details": {
        "name": "churn-classifier",
        "overview": "Predicts **churn** within 30 days.",
        "documentation": "Retrained weekly.\n\n| a | b |\n|--:|---|\n| 1 | 2 |",
        "owners": [{"name": "alice", "contact": "alice@example.com"}, {"name": "ml-platform"}],
        "version": {"name": "3", "date": "2024-02-29", "diff": "Retrained on Q1 data."},
        "licenses": [{"identifier": "Apache-2.0"}],
        "references": [{"reference": "https://example.com/churn"}],
        "citations": [{"style": "BibTeX", "citation": "@misc{churn, title={Churn}}"}],
    },
    "model_parameters": {
        "model_architecture": "Logistic regression (scikit-learn)",
        "task": "tabular-classification",
        "hyperparameters": [{"name": "C", "value": "1.0"}],
        "data": [{"name": "churn-eval", "split": "evaluation", "source": "s3://b/eval.parquet", "digest": "abc123"}],
        "input_format": "30 numeric features",
        "output_format": "probability of churn",
    },
    "quantitative_analysis": {
        "performance_metrics": [
            {
                "type": "accuracy",
                "value": 0.91,
                "dataset": "churn-eval",
                "confidence_interval": {"lower_bound": 0.89, "upper_bound": 0.93},
            },
            {"type": "accuracy", "value": 0.87, "slice": "age>=60", "dataset": "churn-eval"},
            {"type": "auc", "value": 1},
        ]
    },
    "considerations": {
        "users": [{"description": "Retention team"}],
        "use_cases": [{"description": "Prioritise retention calls"}],
        "limitations": [{"description": "Not calibrated for customers of under a month"}],
        "tradeoffs": [{"description": "Recall over precision"}],
        "ethical_considerations": [{"name": "Age bias", "mitigation_strategy": "Monitored monthly"}],
    },
    "intended_use": "Ranking existing customers for retention offers.",
    "out_of_scope_use": "Credit or pricing decisions.",
    "training_data": {
        "description": "Customer events of 2023.",
        "datasets": [
            {
                "name": "churn-train",
                "split": "training",
                "source": "s3://b/train.parquet",
                "digest": "d41d8cd9",
                "sensitive_data": ["personal data"],
            }
        ],
        "feature_views": [{"project": "retail", "name": "customer_activity", "features": ["visits_30d"]}],
    },
    "fairness": {
        "summary": "Recall within 5 points across age bands.",
        "evaluations": [
            {"group": "age_band", "slice": "60+", "metric": "recall", "value": 0.8, "notes": "ok"},
            {"group": "age_band", "metric": "demographic_parity_difference", "value": 0.04},
        ],
    },
    "risk_rating": "medium",
    "risk_notes": "Decides which customers get offers.",
}


@pytest.fixture
def card() -> dict[str, Any]:
    return copy.deepcopy(FULL)


def problems(data: Any) -> dict[str, str]:
    return {error.path: error.message for error in validate_card(data)}


def changed(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(FULL)
    edit(data)
    return data


# --- the package --------------------------------------------------------------------


def test_public_api_is_explicit_and_documented() -> None:
    for module in (hubforge.modelcard, hubforge.modelcard.card, hubforge.modelcard.export, mlflow_store):
        assert module.__doc__
        public = {name for name in vars(module) if not name.startswith("_") and callable(getattr(module, name))}
        defined_here = {n for n in public if getattr(getattr(module, n), "__module__", None) == module.__name__}
        assert defined_here <= set(module.__all__), defined_here - set(module.__all__)
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value):
                assert value.__doc__, f"{module.__name__}.{name} has no docstring"


def test_the_schema_is_draft_2020_12_and_closed_everywhere() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["properties"]["schema_version"] == {"description": "The version of this schema.", "const": "1"}

    def objects(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            found = [node] if node.get("type") == "object" else []
            return found + [o for value in node.values() for o in objects(value)]
        return [o for value in node for o in objects(value)] if isinstance(node, list) else []

    assert len(objects(schema())) > 15
    assert all(o.get("additionalProperties") is False for o in objects(schema()))


def test_the_vendored_mct_schema_is_upstreams_file_with_its_license() -> None:
    folder = PACKAGE / "vendor" / "model_card_toolkit"
    digest = hashlib.sha256((folder / "model_card.schema.json").read_bytes()).hexdigest()
    assert digest in (folder / "README.md").read_text()
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert set(mct_schema()["properties"]) == {
        "schema_version",
        "model_details",
        "model_parameters",
        "quantitative_analysis",
        "considerations",
    }


def test_the_vendored_spdx_ids_carry_their_provenance() -> None:
    folder = PACKAGE / "vendor" / "spdx"
    ids = json.loads((folder / "ids.json").read_text())
    assert {"MIT", "Apache-2.0", "GPL-2.0-only"} <= set(ids["licenses"])
    assert "Classpath-exception-2.0" in ids["exceptions"]
    notice = (folder / "NOTICE").read_text()
    assert ids["license_list_version"] in notice and "CC0" in notice


# --- validation ---------------------------------------------------------------------


def test_a_full_card_is_valid_and_complete(card: dict[str, Any]) -> None:
    assert validate_card(card) == []
    assert check_card(card) is card
    assert completeness(card).score == 1.0
    assert completeness(card).missing == []


def test_an_empty_card_is_valid_and_incomplete() -> None:
    data = empty_card("churn")
    assert validate_card(data) == []
    assert completeness(data).score == 0.0
    assert completeness(data).missing == list(PRODUCTION_FIELDS)


DELETE = object()


def set_at(data: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of ``data`` with ``value`` at ``path`` (``a.b[0].c``); DELETE removes the key."""
    data = copy.deepcopy(data)
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    parent: Any = data
    for part in parts[:-1]:
        parent = parent[part]
    if value is DELETE:
        del parent[parts[-1]]
    else:
        parent[parts[-1]] = value
    return data


REF = "model_details.references[0].reference"


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("extra", 1, "unknown field 'extra'"),
        ("model_details.owners[0].email", "a@b", "unknown field 'email'"),
        ("training_data.feature_views[0].ttl", 3, "unknown field 'ttl'"),
        ("schema_version", DELETE, "required field is missing"),
        ("schema_version", "2", "must be '1'"),
        ("model_details.name", DELETE, "required field is missing"),
        ("model_details.name", "  ", "not blank"),
        ("model_details.name", "a\nb", "one line"),
        ("model_details.name", "x" * 501, "501 characters long; the limit is 500"),
        ("intended_use", "x" * 20_001, "20001 characters long; the limit is 20000"),
        ("model_details.owners", {"name": "a"}, "must be a list, not an object"),
        ("model_details", [], "must be an object, not a list"),
        ("risk_rating", "extreme", "must be one of: low, medium, high"),
        ("model_parameters.task", "Tabular Classification", "pipeline tag"),
        (REF, "javascript:alert(1)", "must be an absolute http or https URL"),
        (REF, "/relative", "must be an absolute http or https URL"),
        (REF, "ftp://files.example/x", "must be an absolute http or https URL"),
        ("training_data.datasets[0].split", "holdout", "must be one of"),
    ],
)
def test_each_problem_is_named_by_its_path(path: str, value: object, words: str) -> None:
    found = problems(set_at(FULL, path, value))
    assert path in found, found
    assert words in found[path]
    assert "\n" not in found[path]


METRIC = "quantitative_analysis.performance_metrics[0].value"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0.9", "must be a number, not a string"),
        (True, "must be a number, not a boolean"),
        (None, "must be a number, not null"),
        ([0.9], "must be a number, not a list"),
        (float("nan"), "must be a finite number, not nan"),
        (float("inf"), "must be a finite number, not inf"),
        (float("-inf"), "must be a finite number, not -inf"),
    ],
)
def test_metric_values_are_finite_numbers(value: object, words: str) -> None:
    data = changed(lambda c: c["quantitative_analysis"]["performance_metrics"][0].update(value=value))
    assert problems(data) == {METRIC: words}


def test_every_number_field_is_checked() -> None:
    def edit(c: dict[str, Any]) -> None:
        c["quantitative_analysis"]["performance_metrics"][0]["confidence_interval"]["lower_bound"] = "low"
        c["quantitative_analysis"]["performance_metrics"][0]["confidence_interval"]["upper_bound"] = float("nan")
        c["fairness"]["evaluations"][1]["value"] = False

    interval = "quantitative_analysis.performance_metrics[0].confidence_interval"
    assert problems(changed(edit)) == {
        f"{interval}.lower_bound": "must be a number, not a string",
        f"{interval}.upper_bound": "must be a finite number, not nan",
        "fairness.evaluations[1].value": "must be a number, not a boolean",
    }


def test_confidence_intervals_are_in_order() -> None:
    data = changed(
        lambda c: c["quantitative_analysis"]["performance_metrics"][0].update(
            confidence_interval={"lower_bound": 0.95, "upper_bound": 0.9}
        )
    )
    assert problems(data) == {
        "quantitative_analysis.performance_metrics[0].confidence_interval": "lower_bound 0.95 is above upper_bound 0.9"
    }


@pytest.mark.parametrize("date", ["2024-02-29", "2023-12-31", "1999-01-01"])
def test_real_iso_dates_are_accepted(date: str) -> None:
    assert validate_card(changed(lambda c: c["model_details"]["version"].update(date=date))) == []


@pytest.mark.parametrize(
    "date", ["2023-02-29", "2024-02-30", "2024-13-01", "24-01-01", "2024/01/01", "20240101", "2024-1-1", "2024-W01-1"]
)
def test_malformed_or_impossible_dates_are_refused(date: str) -> None:
    data = changed(lambda c: c["model_details"]["version"].update(date=date))
    assert problems(data) == {"model_details.version.date": "must be an ISO 8601 date YYYY-MM-DD that exists"}


def test_a_date_that_is_not_text_is_refused() -> None:
    data = changed(lambda c: c["model_details"]["version"].update(date=20240101))
    assert problems(data) == {"model_details.version.date": "must be text, not a number"}


@pytest.mark.parametrize(
    "license_",
    [
        {"identifier": "MIT"},
        {"identifier": "Apache-2.0 OR MIT"},
        {"identifier": "(MIT AND BSD-3-Clause) OR Apache-2.0"},
        {"identifier": "GPL-2.0-or-later WITH Classpath-exception-2.0"},
        {"identifier": "GPL-2.0+"},
        {"identifier": "LicenseRef-acme-internal"},
        {"custom_text": "Internal use at ACME only.\n\nNo redistribution."},
    ],
)
def test_spdx_licenses_and_custom_texts_are_accepted(license_: dict[str, str]) -> None:
    assert validate_card(changed(lambda c: c["model_details"].update(licenses=[license_]))) == []


LICENSE = "model_details.licenses[0]"


@pytest.mark.parametrize(
    ("license_", "path", "words"),
    [
        ({"identifier": "Apache 2"}, f"{LICENSE}.identifier", "'Apache' is not an SPDX license identifier"),
        ({"identifier": "proprietary"}, f"{LICENSE}.identifier", "custom_text"),
        ({"identifier": "mit"}, f"{LICENSE}.identifier", "'mit' is spelled 'MIT' in SPDX"),
        ({"identifier": "MIT or Apache-2.0"}, f"{LICENSE}.identifier", "'or' is out of place"),
        ({"identifier": "MIT OR"}, f"{LICENSE}.identifier", "ends too early"),
        ({"identifier": "(MIT OR Apache-2.0"}, f"{LICENSE}.identifier", "'(' in the license expression is not closed"),
        ({"identifier": "MIT WITH MIT"}, f"{LICENSE}.identifier", "'MIT' is not an SPDX license exception"),
        ({"identifier": "MIT/Apache-2.0"}, f"{LICENSE}.identifier", "unexpected character '/'"),
        ({"identifier": "MIT", "custom_text": "x"}, LICENSE, "exactly one of identifier or custom_text"),
        ({}, LICENSE, "exactly one of identifier or custom_text"),
        ({"custom_text": " \n "}, f"{LICENSE}.custom_text", "must not be blank"),
        ({"name": "MIT"}, f"{LICENSE}.name", "unknown field 'name'"),
    ],
)
def test_licenses_that_are_neither_spdx_nor_custom_text_are_refused(
    license_: dict[str, str], path: str, words: str
) -> None:
    found = problems(changed(lambda c: c["model_details"].update(licenses=[license_])))
    assert words in found.get(path, ""), found


def test_spdx_problem_reads_expressions_as_spdx_does() -> None:
    assert spdx_problem("MIT AND (Apache-2.0 OR BSD-2-Clause)") is None
    assert spdx_problem("") == "must not be blank"
    assert spdx_problem("MIT Apache-2.0") == "unexpected 'Apache-2.0' in a license expression"
    assert spdx_problem("MIT AND )") is not None
    assert spdx_problem("LicenseRef-") is not None


def test_every_unknown_field_is_named() -> None:
    found = problems(changed(lambda c: c["model_details"].update(ownr="a", licence="MIT")))
    assert {"model_details.ownr", "model_details.licence"} <= set(found)
    assert "known: name, overview" in found["model_details.ownr"]


def test_list_lengths_are_capped() -> None:
    metrics = [{"type": "m", "value": 1}] * 1001
    found = problems(changed(lambda c: c["quantitative_analysis"].update(performance_metrics=metrics)))
    assert found == {"quantitative_analysis.performance_metrics": "has 1001 items; the limit is 1000"}


def test_the_whole_card_is_capped_in_canonical_bytes() -> None:
    def use_cases(count: int, text: str) -> dict[str, Any]:
        return changed(lambda c: c["considerations"].update(use_cases=[{"description": text}] * count))

    assert validate_card(use_cases(12, "x" * 20_000)) == []  # about 240 kB
    over = problems(use_cases(14, "x" * 20_000))
    assert list(over) == ["(card)"] and f"the limit is {MAX_CARD_BYTES}" in over["(card)"]
    # Bytes, not characters: 12 texts of 20,000 two-byte characters are about 480 kB.
    assert list(problems(use_cases(12, "é" * 20_000))) == ["(card)"]


def test_what_is_not_a_json_object_is_no_card() -> None:
    assert problems([]) == {"(card)": "a model card is a JSON object, not a list"}
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    assert list(problems(changed(lambda c: c.update(deep=nested)))) == ["(card)"]
    assert list(problems(changed(lambda c: c["model_details"].update(name={"a"})))) == ["model_details.name"]


def test_check_card_raises_one_line_naming_the_first_problem() -> None:
    data = changed(
        lambda c: (c.update(risk_rating="x"), c["quantitative_analysis"]["performance_metrics"][0].update(value="1"))
    )
    with pytest.raises(InvalidCard) as caught:
        check_card(data)
    assert isinstance(caught.value, Invalid) and caught.value.status == 400
    assert str(caught.value) == "invalid model card: risk_rating: must be one of: low, medium, high (and 1 more)"
    assert [e.path for e in caught.value.errors] == ["risk_rating", METRIC]  # shallowest first


# --- completeness -------------------------------------------------------------------


def test_completeness_names_what_is_missing() -> None:
    def edit(c: dict[str, Any]) -> None:
        del c["fairness"]
        c["intended_use"] = "   "
        c["considerations"]["limitations"] = []

    result = completeness(changed(edit))
    assert result.missing == ["intended_use", "fairness.evaluations", "considerations.limitations"]
    assert result.score == pytest.approx(8 / 11)


def test_training_data_counts_with_datasets_or_feature_views() -> None:
    only_views = changed(lambda c: c["training_data"].pop("datasets"))
    assert completeness(only_views).score == 1.0
    neither = changed(lambda c: c.update(training_data={"description": "somewhere"}))
    assert completeness(neither).missing == ["training_data"]


def test_completeness_takes_other_field_lists() -> None:
    fields = {"owners": ("model_details.owners",), "licenses": ("model_details.licenses",)}
    result = completeness(empty_card("m"), fields)
    assert (result.score, result.missing) == (0.0, ["owners", "licenses"])
    assert completeness(FULL, fields).score == 1.0


# --- canonical form -----------------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8() -> None:
    data = {"b": [1, 2.5], "a": {"z": "é", "y": None}}
    assert canonical_json(data) == '{"a":{"y":null,"z":"é"},"b":[1,2.5]}'.encode()
    assert card_digest(data) == hashlib.sha256(canonical_json(data)).hexdigest()


def test_the_digest_is_stable_across_key_order_and_round_trips(card: dict[str, Any]) -> None:
    reordered = json.loads(json.dumps(card, indent=2), object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert list(reordered) != list(card)
    assert card_digest(reordered) == card_digest(card)
    assert parse_card(canonical_json(card)) == card
    assert card_digest(parse_card(canonical_json(card))) == card_digest(card)
    assert card_digest(changed(lambda c: c.update(risk_rating="high"))) != card_digest(card)
    assert (
        card_digest(empty_card("m"))
        == hashlib.sha256(b'{"model_details":{"name":"m"},"schema_version":"1"}').hexdigest()
    )


def test_canonical_json_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(InvalidCard, match="not JSON data"):
        canonical_json({"value": float("nan")})
    with pytest.raises(InvalidCard, match="not JSON data"):
        canonical_json({"value": {1, 2}})


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": 1, "a": 2}', "repeated key 'a'"),
        (b"[1]", "a JSON object, not a list"),
        (b"{", "not a JSON document"),
        (b" " * (MAX_CARD_BYTES + 1), "over"),
    ],
)
def test_parse_card_refuses_what_no_canonical_card_holds(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidCard, match=words):
        parse_card(raw)


# --- Model Card Toolkit -------------------------------------------------------------


def mct_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(mct_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_to_mct_is_valid_against_the_vendored_schema(card: dict[str, Any]) -> None:
    mct = to_mct(card)
    mct_validator().validate(mct)
    assert mct["schema_version"] == "0.0.2"
    assert mct["model_details"]["licenses"] == [{"identifier": "Apache-2.0"}]
    assert mct["model_details"]["version"] == {"name": "3", "date": "2024-02-29", "diff": "Retrained on Q1 data."}
    first = mct["quantitative_analysis"]["performance_metrics"][0]
    assert first == {
        "type": "accuracy",
        "value": "0.91",
        "confidence_interval": {"lower_bound": "0.89", "upper_bound": "0.93"},
    }


def test_to_mct_carries_the_governance_fields(card: dict[str, Any]) -> None:
    mct = to_mct(card)
    considerations = mct["considerations"]
    assert considerations["use_cases"][0] == {"description": FULL["intended_use"]}
    assert considerations["limitations"][0] == {"description": "Out of scope: Credit or pricing decisions."}
    assert considerations["ethical_considerations"][0]["name"] == "Risk rating: medium"
    assert {"type": "recall", "value": "0.8", "slice": "age_band=60+"} in mct["quantitative_analysis"][
        "performance_metrics"
    ]
    data = {d["name"]: d for d in mct["model_parameters"]["data"]}
    assert set(data) == {"churn-train", "retail/customer_activity", "churn-eval"}
    assert data["churn-train"]["sensitive"] == {"sensitive_data": ["personal data"]}
    assert "digest: d41d8cd9" in data["churn-train"]["description"]


def test_to_mct_of_an_empty_card_is_valid_and_minimal() -> None:
    mct = to_mct(empty_card("m"))
    mct_validator().validate(mct)
    assert mct == {"schema_version": "0.0.2", "model_details": {"name": "m"}}


def test_exports_refuse_an_invalid_card() -> None:
    bad = changed(lambda c: c.update(risk_rating="x"))
    for export in (to_mct, to_huggingface, to_html):
        with pytest.raises(InvalidCard):
            export(bad)


# --- Hugging Face -------------------------------------------------------------------


def front_matter(readme: str) -> tuple[dict[str, Any], str]:
    assert readme.startswith("---\n")
    head, _, body = readme[4:].partition("\n---\n")
    return yaml.safe_load(head), body


def test_to_huggingface_writes_yaml_metadata_and_a_model_index(card: dict[str, Any]) -> None:
    meta, body = front_matter(to_huggingface(card))
    assert meta["license"] == "apache-2.0"
    assert meta["tags"] == ["hubforge", "model-card", "risk-medium"]
    assert meta["datasets"] == ["churn-train"]
    assert meta["metrics"] == ["accuracy", "auc"]
    assert meta["pipeline_tag"] == "tabular-classification"
    [model] = meta["model-index"]
    assert model["name"] == "churn-classifier"
    by_dataset = {result["dataset"]["name"]: result for result in model["results"]}
    assert by_dataset["churn-eval"]["task"] == {"type": "tabular-classification"}
    assert by_dataset["churn-eval"]["metrics"] == [
        {"type": "accuracy", "value": 0.91, "name": "accuracy"},
        {"type": "accuracy", "value": 0.87, "name": "accuracy (age>=60)"},
    ]
    assert by_dataset["unspecified"]["metrics"] == [{"type": "auc", "value": 1, "name": "auc"}]
    for heading in ("# churn-classifier", "## Intended use", "## Out-of-scope use", "## Training data"):
        assert f"\n{heading}\n" in f"\n{body}"
    assert "| retail | customer_activity | visits_30d |" in body
    assert "| accuracy | 0.87 | age>=60 | churn-eval |  |" in body


@pytest.mark.parametrize(
    ("licenses", "expected"),
    [
        ([{"identifier": "GPL-3.0-only"}], {"license": "gpl-3.0"}),
        ([{"identifier": "MIT OR Apache-2.0"}], {"license": "other", "license_name": "mit-or-apache-2.0"}),
        ([{"identifier": "LicenseRef-acme"}], {"license": "other", "license_name": "licenseref-acme"}),
        ([{"custom_text": "ACME internal"}], {"license": "other", "license_name": "custom"}),
        ([], {}),
    ],
)
def test_huggingface_licenses(licenses: list[dict[str, str]], expected: dict[str, str]) -> None:
    meta, _ = front_matter(to_huggingface(changed(lambda c: c["model_details"].update(licenses=licenses))))
    assert {k: meta[k] for k in ("license", "license_name") if k in meta} == expected


def test_huggingface_readme_shows_raw_html_as_text_and_keeps_its_front_matter() -> None:
    def edit(c: dict[str, Any]) -> None:
        c["model_details"]["overview"] = "---\nlicense: mit\n---\n<script>alert(1)</script>"
        c["model_details"]["name"] = "x | <img src=x onerror=alert(1)>"

    meta, body = front_matter(to_huggingface(changed(edit)))
    assert meta["license"] == "apache-2.0"
    assert "<script" not in body and "<img" not in body
    assert "&lt;script>alert(1)&lt;/script>" in body


def test_huggingface_readme_of_an_empty_card() -> None:
    meta, body = front_matter(to_huggingface(empty_card("m")))
    assert meta == {"tags": ["hubforge", "model-card"]}
    assert body.strip() == "# m"


# --- HTML ---------------------------------------------------------------------------

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](javascript:alert(1))",
    "<javascript:alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    '<div onclick="alert(1)">\n\n**raw html block**\n\n</div>',
    "<iframe src=https://evil.example></iframe>",
    "<svg onload=alert(1)>",
    '<style>body{background:url("javascript:alert(1)")}</style>',
    "[x](https://ok.example 'title\" onmouseover=\"alert(1)')",
]


class Elements(HTMLParser):
    """Every element and attribute of a page, as a browser's parser sees them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]


def assert_inert(page: str) -> Elements:
    found = Elements(page)
    assert not {"script", "iframe", "img", "svg", "object", "embed", "form", "base"} & set(found.tags)
    assert found.tags.count("style") == 1  # the page's own, in <head>
    assert not [name for name, _ in found.attributes if name.startswith("on")]
    for name, value in found.attributes:
        assert "javascript:" not in value.lower() and "data:" not in value.lower(), (name, value)
        if name in ("href", "src"):
            assert value.startswith(("https://", "http://", "mailto:")), value
    return found


@pytest.mark.parametrize("payload", PAYLOADS)
def test_html_markdown_fields_are_sanitized(payload: str) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["model_details"]["overview"] = c["model_details"]["documentation"] = payload
        c["intended_use"] = c["out_of_scope_use"] = c["risk_notes"] = c["fairness"]["summary"] = payload
        c["considerations"]["limitations"] = [{"description": payload}]
        c["fairness"]["evaluations"][0]["notes"] = payload
        c["training_data"]["datasets"][0]["description"] = payload

    assert_inert(to_html(changed(edit)))


def test_html_plain_fields_are_escaped() -> None:
    payload = '"><script>alert(1)</script><img src=x onerror=alert(1)>'

    def edit(c: dict[str, Any]) -> None:
        c["model_details"]["name"] = c["model_details"]["owners"][0]["contact"] = payload
        c["quantitative_analysis"]["performance_metrics"][0]["type"] = payload
        c["training_data"]["datasets"][0]["name"] = payload
        c["model_details"]["licenses"] = [{"custom_text": payload}]

    page = to_html(changed(edit))
    assert_inert(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_html_page_shows_the_card(card: dict[str, Any]) -> None:
    page = to_html(card)
    found = assert_inert(page)
    assert "<title>Model card: churn-classifier</title>" in page
    assert "Predicts <strong>churn</strong> within 30 days." in page
    assert '<th style="text-align:right">a</th>' in page  # markdown tables, with their alignment
    assert ("href", "https://example.com/churn") in found.attributes
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for text in ("customer_activity", "age_band", "demographic_parity_difference", "Risk: medium", "0.91"):
        assert text in page
    assert_inert(to_html(empty_card("m")))


def test_sanitize_html_holds_even_if_markdown_let_html_through() -> None:
    dirty = (
        '<p onclick="x()">a</p><a href="javascript:alert(1)">b</a><a href="https://ok.example">c</a>'
        "<script>alert(1)</script><img src=x onerror=alert(1)><iframe src=https://e.example></iframe>"
    )
    clean = sanitize_html(dirty)
    found = Elements(clean)
    assert set(found.tags) == {"p", "a"}
    assert ("href", "https://ok.example") in found.attributes
    assert not [name for name, _ in found.attributes if name.startswith("on")]
    assert "javascript" not in clean and "alert" not in clean


def test_render_markdown_keeps_formatting_and_safe_links() -> None:
    html = render_markdown("**bold** [site](https://ok.example) [mail](mailto:a@b.example)\n\n- one")
    assert "<strong>bold</strong>" in html and "<li>one</li>" in html
    assert 'href="https://ok.example"' in html and 'href="mailto:a@b.example"' in html
    assert 'rel="noopener noreferrer nofollow"' in html
    # Raw HTML is text, not markup (markdown-it with html off), before nh3 sees it.
    assert render_markdown("<b>x</b>") == "<p>&lt;b&gt;x&lt;/b&gt;</p>\n"
    assert render_markdown("![a chart](https://img.example/c.png)") == "<p>[image: a chart]</p>\n"
