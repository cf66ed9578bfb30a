"""The scheduler's page (``/services/scheduler/``): one's jobs, their next runs and run history.

Server-rendered HTML without script, behind the hub login: a table of the person's jobs
(everyone's for a platform admin) with their schedule, next run and policies, and under
each job its latest runs with when each was due, its attempt, state, duration, error and
a link to its output notebook. Every value is escaped; the page's Content-Security-Policy
forbids scripts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jupyterhub.utils import url_path_join

from hubforge.hub.governance.report_html import esc

from .store import Job, Run

__all__ = ["PAGE_CSP", "RUNS_SHOWN", "jobs_page"]

PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
#: Runs shown per job.
RUNS_SHOWN = 10

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#1f2937;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:center}
header h1{font-size:20px;margin:0;flex:1}main{padding:16px 24px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;margin:0 0 16px;padding:12px 16px}
h2{font-size:16px;margin:0 0 6px}.meta{font-size:13px;color:#555;margin:0 0 8px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-top:1px solid #eee}
.succeeded{color:#2f7d32}.failed,.timed_out,.interrupted{color:#b3261e}.skipped,.cancelled{color:#777}
.running,.queued{color:#1f5fbf}.paused{color:#b06000;font-weight:600}
"""


def _schedule(job: Job) -> str:
    data = job.schedule.as_json()
    return f"once at {data['once']}" if "once" in data else f"cron {data['cron']} ({data['timezone']})"


def _run_row(prefix: str, run: Run) -> str:
    took = f"{(run.ended - run.started).total_seconds():.1f} s" if run.started and run.ended else ""
    output = url_path_join(prefix, "api/runs", run.id, "output")
    link = f'<a href="{esc(output)}">output</a>' if run.output else ""
    return (
        f'<tr data-run="{esc(run.id)}"><td>{esc(run.scheduled_for.strftime("%Y-%m-%d %H:%M:%S"))} UTC</td>'
        f'<td>{run.attempt}</td><td class="{esc(run.state)}">{esc(run.state.replace("_", " "))}</td>'
        f"<td>{esc(took)}</td><td>{esc(run.error)}</td><td>{link}</td></tr>"
    )


def jobs_page(prefix: str, viewer: str, jobs: Sequence[Job], runs: Mapping[str, Sequence[Run]]) -> str:
    """The page: ``jobs`` with the latest of ``runs`` (job id -> runs, newest first)."""
    sections = []
    for job in jobs:
        if job.paused:
            when = '<span class="paused">paused</span>'
        else:
            when = f"next run {esc(job.next_due.strftime('%Y-%m-%d %H:%M:%S') + ' UTC' if job.next_due else 'none')}"
        policy = (
            f"tier {esc(job.tier)} · timeout {job.timeout_s} s · retries {job.retries} (backoff {job.backoff_s} s) · "
            f"concurrency {esc(job.concurrency)} · catch-up {esc(job.catch_up)}"
        )
        rows = "".join(_run_row(prefix, run) for run in list(runs.get(job.id, ()))[:RUNS_SHOWN])
        history = (
            "<table><tr><th>due</th><th>attempt</th><th>state</th><th>duration</th><th>error</th><th></th></tr>"
            f"{rows}</table>"
            if rows
            else '<p class="meta">No run yet.</p>'
        )
        owner = f" · {esc(job.owner)}" if job.owner != viewer else ""
        sections.append(
            f'<section data-job="{esc(job.id)}"><h2>{esc(job.name)}</h2>'
            f'<p class="meta">{esc(job.notebook_name)} · {esc(_schedule(job))} · {when}{owner}</p>'
            f'<p class="meta">{policy}</p>{history}</section>'
        )
    if not sections:
        sections.append(
            "<p>No scheduled notebook yet. In a terminal of your server: "
            '<code>hubforge schedule create NOTEBOOK --name NAME --cron "0 7 * * 1"</code></p>'
        )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{PAGE_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Scheduled notebooks · hubforge</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>Scheduled notebooks</h1><span>{esc(viewer)}</span></header>\n"
        "<main>\n" + "\n".join(sections) + "\n</main>\n</body>\n</html>\n"
    )
