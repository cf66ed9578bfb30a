"""The stand-in for ``rfc3987_syntax``: the real package's answers, its parsers built only when used."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator

import pytest

from hubforge.imports import DEFERRED, _Finder

REAL = f"{DEFERRED}.syntax_helpers"


@pytest.fixture
def stand_in() -> Iterator:
    """The stand-in as the import system makes it, in place of whatever this process holds."""
    before = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] == DEFERRED}
    for name in before:
        del sys.modules[name]
    spec = _Finder().find_spec(DEFERRED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[DEFERRED] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == DEFERRED]:
            del sys.modules[name]
        sys.modules.update(before)


def test_nothing_is_built_until_a_check_is_made_then_the_checks_answer_as_the_real_package_does(stand_in) -> None:
    # One test: each build of the real package's parsers costs seconds of the unit layer.
    assert REAL not in sys.modules
    assert stand_in.is_valid_syntax("iri", "https://example.com/ä?q=1")
    assert REAL in sys.modules
    assert stand_in.is_valid_syntax("iri", "https://example.com/ä")
    assert not stand_in.is_valid_syntax("iri", "not an iri")
    assert stand_in.is_valid_syntax("iri_reference", "../relative")
    # every other name of the package, from the real one
    assert stand_in.is_valid_syntax_iri("urn:isbn:0451450523")
    assert not stand_in.is_valid_syntax_port("http")
    assert stand_in.RFC3987_SYNTAX_PARSER_TYPE == "earley"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        stand_in.no_such_name  # noqa: B018


def test_its_submodules_import_as_the_real_packages_do(stand_in) -> None:
    helpers = importlib.import_module(REAL)
    assert helpers.is_valid_syntax("iri", "https://example.com/")
    assert importlib.import_module(f"{DEFERRED}.utils").load_grammar


def test_other_names_and_a_missing_package_are_left_to_the_import_system() -> None:
    assert _Finder().find_spec("jsonschema") is None
    assert _Finder().find_spec(f"{DEFERRED}.syntax_helpers") is None
