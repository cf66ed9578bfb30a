"""The ``hubforge profiles`` and ``hubforge k8s`` subcommands.

``hubforge profiles render --user NAME --tier SLUG [--option KEY=VALUE ...]``
prints the pod KubeSpawner would create for that user's choice;
``hubforge k8s render --out DIR`` writes the helm values and Kueue objects.
A choice the user may not make raises a :class:`~hubforge.errors.HubforgeError`,
which ``hubforge``'s ``main`` turns into one ``hubforge: error: ...`` line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import yaml

from hubforge.catalog import ChoiceError
from hubforge.config import load_config

__all__ = ["cmd_k8s_render", "cmd_profiles_render", "parse_options", "register"]


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """``['gpus=2', 'image=pytorch']`` -> ``{'gpus': '2', 'image': 'pytorch'}``."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ChoiceError(f"--option takes KEY=VALUE, not {pair!r}")
        options[key] = value
    return options


def cmd_profiles_render(args: argparse.Namespace) -> int:
    """Print the pod manifest of a user's choice as YAML."""
    from .kubernetes.spawner import render_pod  # KubeSpawner is only imported when needed

    cfg = load_config(getattr(args, "config", None))
    pod = render_pod(cfg, args.user, args.tier, parse_options(args.option))
    print(yaml.safe_dump(pod, sort_keys=False), end="")
    return 0


def cmd_k8s_render(args: argparse.Namespace) -> int:
    """Write the helm values and manifests; list the files written."""
    from .kubernetes.render import render_k8s

    cfg = load_config(getattr(args, "config", None))
    for path in render_k8s(cfg, args.out):
        print(path)
    return 0


def register(
    subparsers: argparse._SubParsersAction,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add ``profiles render`` and ``k8s render`` to ``hubforge``'s subcommands.

    ``parents`` are passed to every new parser (``hubforge``'s common
    ``--config`` option, so that it may follow the subcommand).
    """
    profiles = subparsers.add_parser("profiles", help="show what a compute tier choice creates")
    profiles_sub = profiles.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)
    render = profiles_sub.add_parser(
        "render",
        parents=list(parents),
        help="print (YAML) the pod KubeSpawner would create for a user's tier and options",
    )
    render.add_argument("--user", required=True, metavar="NAME", help="a user of the config's users: section")
    render.add_argument("--tier", required=True, metavar="SLUG", help="the tier to render")
    render.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tier option: image=KEY or gpus=N (repeatable)",
    )
    render.set_defaults(func=cmd_profiles_render)

    k8s = subparsers.add_parser("k8s", help="Kubernetes deployment files")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", metavar="ACTION", required=True)
    k8s_render = k8s_sub.add_parser(
        "render",
        parents=list(parents),
        help="write Zero-to-JupyterHub helm values and Kueue manifests into a folder",
    )
    k8s_render.add_argument("--out", required=True, metavar="DIR", help="the folder to write into")
    k8s_render.set_defaults(func=cmd_k8s_render)
