"""What the apps service reads in a notebook it is asked to publish.

A published app is a frozen copy of a notebook that Voila renders. Before one is kept,
:func:`inspect` checks it as Voila and papermill will meet it and reads what the
gallery shows:

- it is nbformat 4 and valid against nbformat's schema;
- it names a kernel (``metadata.kernelspec.name``) that exists where apps run;
- its parameters: the cell tagged ``parameters`` (papermill's convention, which the
  scheduler follows too), each name with its default and type as papermill infers them;
- its thumbnail: the first PNG or SVG a cell output holds, else none (the gallery draws
  a card from the title).

Each refusal is one line naming what is wrong (:class:`BadNotebook`, a 400).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hubforge.errors import Invalid

__all__ = ["MAX_NOTEBOOK", "MAX_THUMBNAIL", "BadNotebook", "Inspected", "Parameter", "inspect"]

#: The largest notebook the service keeps (outputs included).
MAX_NOTEBOOK = 16 * 1024 * 1024
#: The largest thumbnail kept (a larger first image is skipped, as if there were none).
MAX_THUMBNAIL = 512 * 1024
#: The longest parameter name or default shown.
MAX_PARAMETER_TEXT = 200


class BadNotebook(Invalid):
    """A notebook that cannot be published as it is (400)."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of the notebook's ``parameters`` cell."""

    name: str
    type: str
    default: str
    help: str = ""

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "default": self.default, "help": self.help}


@dataclass(frozen=True)
class Inspected:
    """A notebook fit to publish: its canonical bytes and what the gallery shows of it."""

    body: bytes
    kernel: str
    language: str
    parameters: tuple[Parameter, ...] = ()
    #: (media type, bytes) of its first image output, if any.
    thumbnail: tuple[str, bytes] | None = None
    title: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _load(source: Any) -> Any:
    import nbformat
    from nbformat.v4.rwbase import rejoin_lines

    if isinstance(source, bytes | str):
        if len(source) > MAX_NOTEBOOK:
            raise BadNotebook(f"the notebook is over {MAX_NOTEBOOK // (1024 * 1024)} MiB")
        try:
            source = json.loads(source)
        except ValueError as exc:
            raise BadNotebook(f"the notebook is not JSON: {exc}") from None
    if not isinstance(source, dict):
        raise BadNotebook("the notebook must be a JSON object (an .ipynb file's content)")
    major = source.get("nbformat")
    if major != 4:
        raise BadNotebook(f"the notebook's nbformat is {major!r}: only nbformat 4 notebooks are published")
    try:
        notebook = rejoin_lines(nbformat.from_dict(source))
        nbformat.validate(notebook, version=4)
    except nbformat.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "the notebook"
        raise BadNotebook(f"the notebook is not valid nbformat 4 at {where}: {exc.message}") from None
    except (RecursionError, TypeError, ValueError) as exc:
        raise BadNotebook(f"the notebook is not valid nbformat 4: {exc}") from None
    return notebook


def _parameters(notebook: Any, kernel: str, language: str) -> tuple[Parameter, ...]:
    """The first ``parameters`` cell's names, as papermill's translator for the language reads them."""
    from papermill.translators import papermill_translators

    cells = [cell for cell in notebook.cells if "parameters" in (cell.get("metadata", {}).get("tags") or [])]
    if not cells:
        return ()
    try:
        found = papermill_translators.find_translator(kernel, language).inspect(cells[0])
    except NotImplementedError:
        return ()  # a language whose parameters papermill cannot read: injected all the same
    except Exception as exc:  # papermill's translators raise what the source makes them
        raise BadNotebook(f"the parameters cell cannot be read: {exc}") from None
    out = []
    for item in found:
        name, kind = str(item.name)[:MAX_PARAMETER_TEXT], str(item.inferred_type_name or "")
        default = str(item.default or "")[:MAX_PARAMETER_TEXT]
        out.append(Parameter(name, kind if kind != "None" else "", default, str(item.help or "")[:MAX_PARAMETER_TEXT]))
    return tuple(out)


def _thumbnail(notebook: Any) -> tuple[str, bytes] | None:
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data") or {}
            if "image/png" in data:
                try:
                    png = base64.b64decode(str(data["image/png"]).replace("\n", ""), validate=True)
                except (binascii.Error, ValueError):
                    continue
                if png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) <= MAX_THUMBNAIL:
                    return "image/png", png
            if "image/svg+xml" in data:
                svg = data["image/svg+xml"]
                text = "".join(svg) if isinstance(svg, list) else str(svg)
                if len(text) <= MAX_THUMBNAIL:
                    return "image/svg+xml", text.encode()
    return None


def _title(notebook: Any) -> str:
    """The first Markdown heading, as a default title."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()[:120]
    return ""


def inspect(source: Any, kernels: Iterable[str]) -> Inspected:
    """``source`` (the notebook's JSON text, bytes or object) checked against the kernels apps
    can run (``kernels``); :class:`BadNotebook` naming the first problem."""
    import nbformat

    notebook = _load(source)
    spec = notebook.metadata.get("kernelspec")
    kernel = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(kernel, str) or not kernel:
        raise BadNotebook(
            "the notebook names no kernel (metadata.kernelspec.name): open it in JupyterLab, pick a kernel, save"
        )
    known = sorted(set(kernels))
    if kernel not in known:
        raise BadNotebook(f"the notebook's kernel {kernel!r} does not exist here (kernels: {', '.join(known)})")
    language = str(spec.get("language") or notebook.metadata.get("language_info", {}).get("name") or "")
    body = nbformat.writes(notebook, version=4).encode()
    return Inspected(
        body=body,
        kernel=kernel,
        language=language,
        parameters=_parameters(notebook, kernel, language or "python"),
        thumbnail=_thumbnail(notebook),
        title=_title(notebook),
    )
