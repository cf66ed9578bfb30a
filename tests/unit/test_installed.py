"""The installed-distributions list read from metadata headers agrees with importlib.metadata's."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from hubforge.installed import distributions, freeze
from hubforge.server_extension.requirements_cache import environment_fingerprint


def test_every_distribution_as_importlib_metadata_reads_it() -> None:
    expected = [(d.metadata["Name"], d.version) for d in importlib.metadata.distributions() if d.metadata["Name"]]
    assert distributions() == expected
    assert ("mlflow", importlib.metadata.version("mlflow")) in distributions()


def test_freeze_names_the_first_of_each_name_sorted() -> None:
    lines = freeze().splitlines()
    assert lines == sorted(lines, key=str.lower)
    names = [line.split("==")[0].lower() for line in lines]
    assert len(names) == len(set(names))
    assert f"mlflow=={importlib.metadata.version('mlflow')}" in lines


def _dist(root: Path, folder: str, file: str, text: str) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / file).write_text(text)


def test_headers_of_odd_metadata_files(tmp_path: Path, monkeypatch) -> None:
    # A wheel's METADATA whose description mentions other names; an egg's PKG-INFO; a
    # folder with no metadata at all; a header continued on the next line.
    _dist(
        tmp_path,
        "alpha-1.0.dist-info",
        "METADATA",
        "Metadata-Version: 2.1\nName: Alpha\nSummary: first line\n  continued\nVersion: 1.0\n\n"
        "Name: not-me\nVersion: 9\n",
    )
    pkg_info = "Metadata-Version: 1.0\r\nname: beta\r\nversion: 2.0b1\r\n\r\nbody\r\n"
    _dist(tmp_path, "beta.egg-info", "PKG-INFO", pkg_info)
    (tmp_path / "gamma-3.dist-info").mkdir()
    monkeypatch.setattr("sys.path", [str(tmp_path)])
    assert sorted(distributions()) == [("Alpha", "1.0"), ("beta", "2.0b1")]
    assert freeze() == "Alpha==1.0\nbeta==2.0b1\n"


def test_the_requirements_fingerprint_is_the_one_earlier_releases_wrote() -> None:
    # A person's requirements cache on disk stays valid across this change.
    import hashlib

    seen = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in importlib.metadata.distributions()})
    assert environment_fingerprint() == hashlib.sha256("\n".join(seen).encode()).hexdigest()[:32]
