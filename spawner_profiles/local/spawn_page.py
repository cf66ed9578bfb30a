"""The spawn page's tier picker: only the tiers a user may use, with live GPU counts.

Rendered by JupyterHub inside its spawn form (``Spawner.options_form`` as a
callable); the fields come back through ``options_from_form`` and are
checked like any REST request.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from hubforge.catalog import Tier, tiers_for

from .accounts import WORDS
from .gpus.devices import Selector

__all__ = ["render_options_form", "tier_cards"]


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("options_form.html")


def _selector(tier: Tier) -> Selector | None:
    res = tier.resources
    return Selector(res.model, res.mig_profile) if res.gpus.max and res.model else None


def _gpu_label(tier: Tier) -> str:
    res = tier.resources
    if not res.gpus.max:
        return ""
    kind = f"{res.model} {res.mig_profile} MIG slice" if res.mig_profile else f"{res.model} GPU"
    return f"{res.gpus.min} to {res.gpus.max} × {kind}{'s' if res.gpus.max > 1 else ''}"  # noqa: RUF001


def _runs_anywhere(_image: str) -> str | None:
    return None


def tier_cards(
    tiers: list[Tier], snapshot: Any, image_unavailable: Callable[[str], str | None] = _runs_anywhere
) -> list[dict[str, Any]]:
    """The values each tier's card shows (pure: tiers, an allocator snapshot and why an image
    cannot run here in, dicts out)."""
    cards = []
    for tier in tiers:
        res, state = tier.resources, snapshot.tiers.get(tier.slug)
        total = state.total if state else 0
        images = [
            {"key": i.key, "display_name": i.display_name, "unavailable": image_unavailable(i.key) or ""}
            for i in tier.images
        ]
        runnable = [i["key"] for i in images if not i["unavailable"]]
        default_image = tier.default_image if tier.default_image in runnable else (runnable or [""])[0]
        cards.append(
            {
                "slug": tier.slug,
                "display_name": tier.display_name,
                "description": tier.description,
                "cpu": f"{res.cpu_limit:g}",
                "memory": res.mem_limit,
                "model": f"{res.model} ({res.mig_profile})" if res.mig_profile else res.model,
                "gpu_label": _gpu_label(tier),
                "gpu_min": res.gpus.min,
                "gpu_max": res.gpus.max,
                "gpu_default": res.gpus.default,
                "gpu_total": total,
                "gpu_free": state.free if state else 0,
                "waiting": state.queued if state else 0,
                "needs_gpu": res.gpus.min > 0,
                "available": bool(runnable) and (total > 0 or res.gpus.min == 0),
                "no_image": "" if runnable else "none of its images can run on this machine",
                "queued": tier.queue is not None,
                "images": images,
                "default_image": default_image,
                "checked": False,
            }
        )
    first = next((c for c in cards if c["available"]), None)
    if first is not None:
        first["checked"] = True
    return cards


def render_options_form(spawner: Any) -> str:
    """``Spawner.options_form``: the tier cards for this spawner's user (and, where people's
    notebooks share one account, a note saying so)."""
    tiers = tiers_for(spawner.catalog, spawner.user_groups(), spawner.user_personas())
    spawner.reconcile_allocations()  # GPUs of servers the hub no longer has count as free
    snapshot = spawner.allocator.snapshot({t.slug: _selector(t) for t in tiers})
    shared = getattr(spawner, "isolation", "users") == "none"
    cards = tier_cards(tiers, snapshot, getattr(spawner, "image_unavailable", _runs_anywhere))
    return _template().render(tiers=cards, not_isolated=WORDS["none"] if shared else "")
