"""papermill's own command line, run after ``import hubforge``: ``python -m hubforge.papermill_cli``.

``python -m papermill`` imports nbformat, and with it jsonschema, before it loads any engine;
jsonschema then builds ``rfc3987_syntax``'s parsers, most of a second of CPU at every
scheduled run's start. Imported first, hubforge defers them (see :mod:`hubforge.imports`).
Arguments, output and exit status are papermill's.
"""

from __future__ import annotations

import hubforge  # noqa: F401  (before papermill: it defers the parsers jsonschema would build)

__all__ = ["main"]


def main() -> None:
    from papermill.cli import papermill

    papermill(prog_name="papermill")


if __name__ == "__main__":
    main()
