"""The ``hubforge`` command line.

``hubforge config`` (here) checks and shows the platform config; ``hubforge features
apply`` (here, run by ``make up``) applies the demo feature repository in the Feast
environment. The other subcommands belong to the parts that do the work and register
themselves through the ``hubforge.commands`` entry-point group (``up`` from the hub,
``profiles`` and ``k8s`` from the spawners), so this bottom-layer package imports none
of them. Errors a person can act on end the command with one line on stderr
and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from . import __version__
from .config import default_config_text, load_config
from .errors import CLI_EXIT, HubforgeError

__all__ = ["COMMANDS_GROUP", "build_parser", "main"]

#: The entry-point group of subcommands: each entry is ``register(subparsers, parents)``.
COMMANDS_GROUP = "hubforge.commands"


def _config_path(args: argparse.Namespace) -> str | None:
    # --config may come before or after the subcommand; SUPPRESS keeps either.
    return getattr(args, "config", None)


def _cmd_config_check(args: argparse.Namespace) -> int:
    cfg = load_config(_config_path(args))
    print(f"ok: {cfg.source} (data in {cfg.data_dir})")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    print(load_config(_config_path(args)).dump(), end="")
    return 0


def _cmd_config_default(args: argparse.Namespace) -> int:
    print(default_config_text(), end="")
    return 0


def _cmd_features_apply(args: argparse.Namespace) -> int:
    # Feast has an environment of its own (hubforge.features.environment): the work runs there.
    from .features.environment import run_in_feast

    cfg = load_config(_config_path(args))
    return run_in_feast(cfg, ["apply", *(["--force"] if args.force else [])])


def _add_features(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    features = sub.add_parser("features", help="the feature store (Feast): apply the demo feature repository")
    features_sub = features.add_subparsers(dest="features_command", metavar="ACTION", required=True)
    apply = features_sub.add_parser(
        "apply",
        parents=[common],
        help="write the demo repository into <data_dir>/features, apply it and fill its online store, "
        "in the Feast environment (make up runs it; quick when nothing changed)",
    )
    apply.add_argument("--force", action="store_true", help="generate, apply and materialize again, changed or not")
    apply.set_defaults(func=_cmd_features_apply)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="platform.yaml to use (default: $HUBFORGE_CONFIG, else the shipped default)",
    )
    parser = argparse.ArgumentParser(
        prog="hubforge",
        description="hubforge: a governed, self-service AI platform on JupyterHub.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"hubforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = sub.add_parser("config", help="check or show the platform config")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    actions: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
        "check": ("validate the config; one line per problem, non-zero status if invalid", _cmd_config_check),
        "show": ("print the effective config (defaults merged in)", _cmd_config_show),
        "default": ("print the documented default platform.yaml", _cmd_config_default),
    }
    for name, (help_text, func) in actions.items():
        action = config_sub.add_parser(name, parents=[common], help=help_text)
        action.set_defaults(func=func)

    _add_features(sub, common)

    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(sub, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HubforgeError as exc:
        print(f"hubforge: error: {exc}", file=sys.stderr)
        return CLI_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
