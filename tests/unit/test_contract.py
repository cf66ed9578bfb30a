"""The contract between the platform's processes has one home: ``hubforge.contract``."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubforge import contract

ROOT = Path(__file__).resolve().parents[2]
#: The package's folders (the user's layout: each installed under ``hubforge.``).
SOURCES = ("hubforge", "hub", "server_extension", "spawner_profiles", "widgets")
CONTRACT = ROOT / "hubforge" / "contract.py"


def _python_files() -> list[Path]:
    return [path for folder in SOURCES for path in sorted((ROOT / folder).rglob("*.py"))]


def test_the_contract_imports_only_the_standard_library() -> None:
    tree = ast.parse(CONTRACT.read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported, "the parse found no imports at all"
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


def test_every_platform_variable_is_named_only_in_the_contract() -> None:
    """A quoted ``HUBFORGE_*`` name outside the contract is a second spelling of the contract."""
    spelled = re.compile(r"""["']HUBFORGE_[A-Z_]+["']""")
    elsewhere = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _python_files()
        if path != CONTRACT
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line)
    ]
    assert not elsewhere, "\n".join(elsewhere)
    names = [value for key, value in vars(contract).items() if key.endswith("_ENV")]
    assert len(names) == len(set(names)) >= 20 and all(name.startswith("HUBFORGE_") for name in names)
    assert sorted(key for key in vars(contract) if key.endswith("_ENV")) == sorted(
        key for key in contract.__all__ if key.endswith("_ENV")
    )


@pytest.mark.parametrize(
    ("value", "off"),
    [
        ("off", True),
        (" OFF ", True),
        ("0", True),
        ("False", True),
        ("no", True),
        ("on", False),
        ("1", False),
        ("", False),
        (None, False),
        ("offline", False),
    ],
)
def test_a_switch_reads_the_same_everywhere(value: str | None, off: bool) -> None:
    assert contract.switched_off(value) is off
    env = {} if value is None else {contract.TRACKING_ENV: value}
    assert contract.tracking_on(env) is not off


def test_the_server_and_the_kernel_read_the_tracking_switch_alike() -> None:
    """The server hands the switch on (``tracking_state``), the kernel reads it (``KernelContext``)."""
    from hubforge.server_extension.kernel.context import KernelContext
    from hubforge.server_extension.launch import tracking_state

    for value in ("off", "No", "on", ""):
        handed = tracking_state({contract.TRACKING_ENV: value}, enabled=True)
        kernel = KernelContext.from_env({contract.TRACKING_ENV: handed, "JUPYTERHUB_USER": "alice"})
        assert kernel.enabled is (not contract.switched_off(value))
    assert tracking_state({}, enabled=False) == "off"


# -- records on disk: the schemas and the readers give the same answers ---------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
#: Values a field could wrongly hold: each JSON type, its edge cases, near-misses of the right one.
WRONG: list[object] = [
    *(None, True, False, 0, 1, -1, 10**30, 1.0, 0.5, float("nan"), float("inf"), [], {}, ["x"], {"a": 1}),
    *("", "x", "é", "éé", "1", "m", "p", "t", "M", "FINISHED", "FAILED", "KILLED", "RUNNING", "null"),
    *("0" * 32, "0" * 64, "0" * 65, "a-b", "a" * 100_000, "a" * 100_001),
]
_WRONG = st.one_of(
    st.sampled_from(WRONG),
    st.integers(),
    st.floats(),
    _JSON,
)


@st.composite
def _near_valid(draw: st.DrawFn, valid: list[object] | dict[str, object]) -> object:
    """``valid`` with a few fields replaced by :data:`_WRONG` values, dropped or added."""
    value: list[object] | dict[str, object] = list(valid) if isinstance(valid, list) else dict(valid)
    for _ in range(draw(st.integers(0, 2))):
        keys = list(range(len(value))) if isinstance(value, list) else list(value)
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "add" or not keys:
            if isinstance(value, list):
                value.append(draw(_WRONG))
            else:
                value[draw(st.text(max_size=12))] = draw(_WRONG)
        elif action == "drop":
            key = draw(st.sampled_from(keys))
            value.pop(key)  # type: ignore[arg-type]
        else:
            value[draw(st.sampled_from(keys))] = draw(_WRONG)  # type: ignore[index]
    return value


ITEMS = [
    contract.metric_item("0" * 32, "loss", 0.5, 1700000000000, 3),
    contract.param_item("0" * 32, "C", "1.0"),
    contract.tag_item("0" * 32, "note", ""),
]
_ITEMS = st.one_of(*map(_near_valid, ITEMS), _JSON)


def _integral_float(value: object) -> bool:
    """JSON has one number type: the schemas call 1.0 an integer, the readers (which get
    what Python's json made of the file) take only ints. Stricter, never looser."""
    return isinstance(value, float) and value.is_integer()


def _schema_valid(schema: dict, instance: object) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


def test_the_record_schemas_are_valid_json_schemas() -> None:
    for schema in (contract.ITEM_SCHEMA, contract.RUN_SCHEMA):
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_constructors_make_valid_items() -> None:
    for item in (
        contract.metric_item("r1", "loss", 0.5, 1, 0),
        contract.metric_item("r1", "loss", float("nan"), 1, 3),
        contract.param_item("r1", "C", "1.0"),
        contract.tag_item("r1", "mlflow.note", ""),
    ):
        assert contract.item_refusal(item) is None, item
        assert _schema_valid(contract.ITEM_SCHEMA, item), item
        assert json.loads(json.dumps(item)) == item or item[contract.VALUE] != item[contract.VALUE]  # NaN


def test_every_item_one_field_off_is_read_as_its_schema_says() -> None:
    variants = [variant for item in ITEMS for variant in _one_field_off(item)]
    assert len(variants) > 300
    for variant in variants:
        _item_agrees(variant)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(_ITEMS)
def test_an_item_is_read_as_its_schema_says(item: object) -> None:
    _item_agrees(item)


def _item_agrees(item: object) -> None:
    refusal = contract.item_refusal(item)
    valid = _schema_valid(contract.ITEM_SCHEMA, item)
    if valid and refusal is not None:
        assert isinstance(item, list) and any(_integral_float(field) for field in item[contract.TIMESTAMP :]), (
            item,
            refusal,
        )
    else:
        assert (refusal is None) == valid, (item, refusal)
    if refusal is not None:
        assert "\n" not in refusal and refusal


RUNS: list[dict[str, object]] = [
    {"version": 1, "tracking_uri": "http://mlflow", "run_id": "0" * 32},
    {
        "version": 1,
        "tracking_uri": "http://mlflow",
        "run_id": None,
        "experiment_name": "/Users/alice/nb.ipynb",
        "tags": {"mlflow.user": "alice"},
        "start_time": 1,
        "status": None,
        "end_time": 2,
        "dropped": 0,
        "id": "1-ab",
        "notebook_file": "nb.ipynb",
    },
    {"version": 1, "tracking_uri": "http://mlflow", "run_id": "0" * 32, "tags": {"a": "b", "c": "d"}},
]
_RUNS = st.one_of(*map(_near_valid, RUNS), _JSON)


def _one_field_off(valid: list[object] | dict[str, object]) -> list[object]:
    """Every copy of ``valid`` with one field replaced by each :data:`WRONG` value, or dropped."""
    keys = range(len(valid)) if isinstance(valid, list) else list(valid)
    variants: list[object] = []
    for key in keys:
        for wrong in WRONG:
            changed = list(valid) if isinstance(valid, list) else dict(valid)
            changed[key] = wrong  # type: ignore[index]
            variants.append(changed)
        dropped = list(valid) if isinstance(valid, list) else dict(valid)
        dropped.pop(key)  # type: ignore[arg-type]
        variants.append(dropped)
    return variants


def test_every_run_json_one_field_off_is_read_as_its_schema_says() -> None:
    variants = [variant for run in RUNS for variant in _one_field_off(run)]
    assert len(variants) > 300
    for variant in variants:
        _run_agrees(variant)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(_RUNS)
def test_a_run_json_is_read_as_its_schema_says(data: object) -> None:
    _run_agrees(data)


def _run_agrees(data: object) -> None:
    from hubforge.server_extension.pending import PendingRun

    try:
        PendingRun.parse(data)
        refusal = None
    except ValueError as exc:
        refusal = str(exc)
    valid = _schema_valid(contract.RUN_SCHEMA, data)
    if valid and refusal is not None:
        assert isinstance(data, dict) and any(_integral_float(value) for value in data.values()), (data, refusal)
    else:
        assert (refusal is None) == valid, (data, refusal)
    if refusal is not None:
        assert refusal.startswith("run.json: ") and "\n" not in refusal


def test_a_dead_kernels_spool_keeps_only_valid_items(tmp_path: Path) -> None:
    """A spool line holds a chunk of items; what is not an item is left out, what is stays."""
    from hubforge.server_extension.pending import _spooled_items

    good = [contract.metric_item(contract_placeholder(), "loss", 0.5, 1, 0), contract.param_item("r1", "C", "1")]
    bad = [["m", "r1", "loss", True, 1, 0], ["p", "r1", "C"], ["x", "r1", "k", "v"], {"m": 1}]
    spool = tmp_path / "spool-1.jsonl"
    spool.write_text(json.dumps(good + bad) + "\n")
    items = _spooled_items(spool, "r9")
    assert items == [["m", "r9", "loss", 0.5, 1, 0], ["p", "r1", "C", "1"]]


def contract_placeholder() -> str:
    from hubforge.server_extension.pending import PLACEHOLDER

    return PLACEHOLDER
