"""Property-based tests of the governance API against its own OpenAPI document, with schemathesis.

Every operation of the document the service serves, called as each persona
the API tests use (users of the fake hub, through HubOAuth unpatched), on
SQLite and on PostgreSQL (the ``running`` fixture of ``harness.governance``),
each persona with generated examples of its own (a seed of its own), so that
together they try six times as many inputs as one persona would; the cases the
document defines (schemathesis's coverage phase, the same whatever the seed:
every boundary and wrong type of every field) as the persona who submits requests
and the one who reads everything:
no 5xx, every status and header documented, every body matching its schema,
schema-valid input accepted and invalid input refused with a 4xx, and a 405
with ``Allow`` for the methods a path lacks (schemathesis's default checks).
Then workflows chained by the document's links (submit, read, decide), each
call made by the next persona in turn, so requests get decided by others.
Last, the strict body parser on its own: every JSON value made of valid text
parses back unchanged, and every lone surrogate is refused.

Sizes are small so that the module runs in under a minute; ``deadline=None``
because these tests check behaviour, never timings.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import Case, Response
from schemathesis.checks import positive_data_acceptance

from harness.governance import PREFIX, USERS, Running
from hubforge import __version__
from hubforge.hub.governance.handlers import ROUTES
from hubforge.hub.governance.jsonbody import BodyError, parse_json_body
from hubforge.hub.governance.openapi import build_spec
from hubforge.hub.governance.store import ApprovalRequestRow, GovernanceStore

#: One user per persona the API tests use: persona -> token.
PERSONA_TOKENS = {
    "data-scientist": "alice-token",
    "ml-engineer": "bob-token",
    "ml-lead": "carol-token",
    "data-steward": "dan-token",
    "platform-admin": "erin-token",
    "analyst": "ana-token",
}

#: The document as make_app builds it for the test service (checked against the served one below).
SPEC = build_spec(ROUTES, PREFIX, cookie_name="service-governance", version=__version__)

#: Fixed seeds: a failure found once is found again on the next run. The workflows' document,
#: and each persona's (seed ``SEED + i``: the same seed would give every persona the same inputs).
SEED = 20240601


#: Who also sends every case the document defines (about 750 requests per backend each).
COVERAGE_PERSONAS = frozenset({"data-scientist", "platform-admin"})


def fuzzed(seed: int, coverage: bool = True) -> Any:
    """The document for schemathesis, generating from ``seed`` (``coverage``: with the cases the
    document defines). A copy: schemathesis adds the links it infers to the document it is given."""
    phases = {"coverage": {"enabled": coverage}}
    config = schemathesis.Config.from_dict({"seed": seed, "generation": {"mode": "all"}, "phases": phases})
    return schemathesis.openapi.from_dict(copy.deepcopy(SPEC), config=config)


schema = fuzzed(SEED)

#: Examples per operation, persona and backend: 60 distinct inputs per operation over the six.
FUZZ_SETTINGS = settings(max_examples=10, deadline=None, database=None)
# The state machine takes no seed from schemathesis: derandomize for the same runs every time.
WORKFLOW_SETTINGS = settings(max_examples=15, stateful_step_count=8, deadline=None, database=None, derandomize=True)


def base_url(running: Running) -> str:
    """Where the operations of the document are served."""
    return running.url + PREFIX.rstrip("/")


def test_fuzzed_document_is_the_served_one(running):
    with running.client() as c:
        assert c.get("api/openapi.json").json() == SPEC


#: Operations whose bodies are checked beyond what the document can say: each audit record
#: against its own event schema (``__schema__``), and its user against the caller. Input
#: the document allows may be refused there (400); test_audit_ingest covers what is accepted.
#: The decision page's form is the page's own (its fields and XSRF token, form-encoded), not
#: an API body: it takes nothing from a token-authenticated caller (403), see test_deploy_requests.
CHECKED_BEYOND_THE_DOCUMENT = {("POST", "/api/audit/events"), ("POST", "/requests/{request_id}")}


def every_operation_as(persona: str, seed: int) -> Callable[..., None]:
    """The test of every operation called as ``persona``'s user, with examples from ``seed``."""
    token = PERSONA_TOKENS[persona]
    assert USERS[token]["groups"] == [persona]

    @fuzzed(seed, coverage=persona in COVERAGE_PERSONAS).parametrize()
    @FUZZ_SETTINGS
    def test(case: Case, running: Running) -> None:
        beyond = (case.method.upper(), case.path) in CHECKED_BEYOND_THE_DOCUMENT
        case.call_and_validate(
            base_url=base_url(running),
            headers={"Authorization": f"token {token}"},
            excluded_checks=[positive_data_acceptance] if beyond else None,
        )

    return test


test_every_operation_as_a_data_scientist = every_operation_as("data-scientist", SEED + 1)
test_every_operation_as_an_ml_engineer = every_operation_as("ml-engineer", SEED + 2)
test_every_operation_as_an_ml_lead = every_operation_as("ml-lead", SEED + 3)
test_every_operation_as_a_data_steward = every_operation_as("data-steward", SEED + 4)
test_every_operation_as_a_platform_admin = every_operation_as("platform-admin", SEED + 5)
test_every_operation_as_an_analyst = every_operation_as("analyst", SEED + 6)


def empty(store: GovernanceStore) -> None:
    """Delete every request: each workflow starts from the same state, so Hypothesis can replay it."""
    with store.engine.begin() as connection:
        connection.execute(sa.delete(ApprovalRequestRow))


def test_request_workflows_across_personas(running):
    tokens = list(PERSONA_TOKENS.values())
    seen: set[tuple[str, int]] = set()

    class Workflow(schema.as_state_machine()):
        """Each call by the next persona in turn: one submits, another reads or decides."""

        def setup(self) -> None:
            self.calls = 0
            empty(running.app.settings["store"])

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            token = tokens[self.calls % len(tokens)]
            self.calls += 1
            return {"base_url": base_url(running), "headers": {"Authorization": f"token {token}"}}

        def after_call(self, response: Response, case: Case) -> None:
            super().after_call(response, case)
            seen.add((f"{case.method} {case.path}", response.status_code))

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            # As in test_every_operation_as_each_persona: what the document cannot say is checked
            # elsewhere (an approver who reaches the decision page's form without a form gets a 400).
            if (case.method.upper(), case.path) not in CHECKED_BEYOND_THE_DOCUMENT:
                super().validate_response(response, case, additional_checks, **kwargs)
                return
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=[positive_data_acceptance],
                transport_kwargs=kwargs or None,
                recorder=getattr(self, "recorder", None),
            )

    Workflow.run(settings=WORKFLOW_SETTINGS)
    # The links were followed with real ids: requests were made, then found; deciding them
    # was tried with every persona's token and never taken (people decide in their browser).
    assert ("POST /api/requests", 201) in seen
    assert ("GET /api/requests/{request_id}", 200) in seen
    assert ("POST /api/requests/{request_id}/decision", 403) in seen
    assert not {call for call in seen if call[0].endswith("/decision") and call[1] < 300}


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
@settings(max_examples=200, deadline=None, database=None)
def test_strict_parser_keeps_every_value_of_valid_json(value: Any) -> None:
    # st.text() holds no surrogates: strictness must never refuse what is valid.
    assert parse_json_body(json.dumps(value).encode()) == value
    assert parse_json_body(json.dumps(value, ensure_ascii=False).encode()) == value


@given(st.text(), st.integers(0xD800, 0xDFFF), st.text())
@settings(max_examples=200, deadline=None, database=None)
def test_strict_parser_refuses_every_lone_surrogate(before: str, code: int, after: str) -> None:
    raw = json.dumps({"field": before + chr(code) + after}).encode()  # sent as a \uXXXX escape
    with pytest.raises(BodyError, match=r"^field 'field' is not valid Unicode: lone surrogate \\ud[89a-f]"):
        parse_json_body(raw)
