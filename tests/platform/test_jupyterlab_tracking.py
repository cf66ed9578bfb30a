"""A data scientist's notebook in real JupyterLab is tracked in MLflow, rename included.

alice logs in through the hub's form in Debian's chromium, picks the default
tier on the spawn page and lands in JupyterLab on her own server. From the
Launcher she opens a new Python 3 notebook (``Untitled.ipynb``), types and runs
a small scikit-learn training at a person's pace, asks the kernel for its
tracking status, saves, renames the notebook with File > Rename Notebook… and
shuts the kernel down from the Kernel menu. Then, with her own hub token
through the proxy, the MLflow REST API must show one finished session run under
the notebook's new name (its experiment renamed with it), with the metric she
logged, the notebook and environment as artifacts, and autolog's child run for
the fit; and the MLflow UI, opened in the same browser, shows that run.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from harness.jupyterlab import (
    UI_TIMEOUT_MS,
    alice_token,
    current_tab,
    log_in,
    new_notebook_from_launcher,
    notebook,
    run_cell,
    start_server_from_spawn_page,
)
from harness.platform import CHROMIUM, CHROMIUM_FLAGS, MLFLOW_API, experiment_runs, wait_for

NEW_NAME = "iris_baseline.ipynb"
EXPERIMENT = f"/Users/alice/{NEW_NAME}"
TRAINING = [
    "from sklearn.datasets import load_iris\nfrom sklearn.linear_model import LogisticRegression",
    "X, y = load_iris(return_X_y=True)\nmodel = LogisticRegression(C=0.7, max_iter=500).fit(X, y)",
    'import mlflow\nmlflow.log_metric("train_accuracy", model.score(X, y))',
]
STATUS = "%hubforge_tracking status"
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'


def status_lines(cell: Any) -> dict[str, str]:
    """``%hubforge_tracking status``'s output as {key: value}."""
    output = cell.locator(".jp-OutputArea-output")
    output.first.wait_for(timeout=UI_TIMEOUT_MS)
    text = "\n".join(output.all_inner_texts())
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def choose_in_menu(page: Any, menu: str, item: str) -> None:
    """Open ``menu`` in the menu bar and click ``item``."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{menu}$")).click(timeout=UI_TIMEOUT_MS)
    page.locator(".lm-Menu-item:visible", has_text=item).first.click(timeout=UI_TIMEOUT_MS)


def save(page: Any) -> None:
    """Ctrl+S. JupyterLab offers to name an untitled notebook on its first save; keep the name for now."""
    page.keyboard.press("Control+s")
    dialog = page.locator(".jp-Dialog")
    dialog.filter(has_text="Rename file").wait_for(timeout=UI_TIMEOUT_MS)
    dialog.locator(".jp-mod-reject").click()
    dialog.wait_for(state="detached", timeout=UI_TIMEOUT_MS)
    page.wait_for_function(
        "() => { const t = document.querySelector('.lm-DockPanel .lm-TabBar-tab.jp-mod-current');"
        " return t && !t.classList.contains('jp-mod-dirty'); }",
        timeout=UI_TIMEOUT_MS,
    )


def rename(page: Any, new_name: str) -> None:
    """File > Rename Notebook…, type the new name, confirm; wait for the tab to carry it."""
    choose_in_menu(page, "File", "Rename Notebook")
    dialog = page.locator(".jp-Dialog")
    field = dialog.locator("input")
    field.wait_for(timeout=UI_TIMEOUT_MS)
    field.fill(new_name)
    dialog.locator(".jp-mod-accept").click()
    dialog.wait_for(state="detached", timeout=UI_TIMEOUT_MS)
    current_tab(page).locator(".lm-TabBar-tabLabel", has_text=new_name).wait_for(timeout=UI_TIMEOUT_MS)


def shut_down_kernel(page: Any) -> None:
    """Kernel > Shut Down Kernel, confirming if JupyterLab asks."""
    from playwright.sync_api import TimeoutError as NotAsked

    choose_in_menu(page, "Kernel", "Shut Down Kernel")
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        accept.wait_for(timeout=3_000)
    except NotAsked:
        return
    accept.click()


class Console:
    """What JupyterLab's (and the MLflow UI's) console said in error."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def about_hubforge(self) -> list[str]:
        return [error for error in self.errors if "hubforge" in error.lower()]


# --- MLflow, through the hub with alice's token ---------------------------------------------------


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def ended_runs(client: httpx.Client) -> tuple[str, dict[str, Any], list[dict[str, Any]]] | None:
    """(experiment id, session run, child runs) once every run of the notebook's experiment has ended."""
    found = experiment_runs(client, EXPERIMENT)
    if found is None:
        return None
    experiment_id, runs = found
    if not runs or any(run["info"]["status"] == "RUNNING" for run in runs):
        return None
    sessions = [run for run in runs if "mlflow.parentRunId" not in tags_of(run)]
    assert len(sessions) == 1, sessions
    children = [run for run in runs if "mlflow.parentRunId" in tags_of(run)]
    return experiment_id, sessions[0], children


def artifact_paths(client: httpx.Client, run_id: str, folder: str) -> list[str]:
    listed = client.get(f"{MLFLOW_API}/artifacts/list", params={"run_id": run_id, "path": folder})
    assert listed.status_code == 200, listed.text
    return [entry["path"] for entry in listed.json().get("files", [])]


def check_session_run(client: httpx.Client, run: dict[str, Any], children: list[dict[str, Any]]) -> None:
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED", run["info"]
    assert run["info"]["run_name"] == NEW_NAME
    assert tags_of(run)["mlflow.source.name"] == NEW_NAME
    metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
    assert 0.9 < metrics["train_accuracy"] <= 1.0, metrics
    assert f"notebook/{NEW_NAME}" in artifact_paths(client, run_id, "notebook")
    assert "environment/requirements.txt" in artifact_paths(client, run_id, "environment")
    (child,) = children
    assert tags_of(child)["mlflow.parentRunId"] == run_id
    assert child["info"]["run_name"] == "LogisticRegression"
    assert child["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in child["data"].get("params", [])}
    assert params["C"] == "0.7", params


# --- the test -------------------------------------------------------------------------------------


def work_in_jupyterlab(page: Any, client: httpx.Client, artifacts: Any) -> None:
    """Steps 2 to 5: new notebook, training cells, status, save, rename, status, kernel shutdown."""
    untitled = new_notebook_from_launcher(page)
    for index, code in enumerate(TRAINING):
        run_cell(page, index, code)
    stderr = notebook(page).locator(STDERR)
    assert stderr.count() == 0, stderr.all_inner_texts()
    before = status_lines(run_cell(page, len(TRAINING), STATUS))
    assert before.get("tracking") == "on", before
    assert before.get("run"), before
    assert before.get("notebook") == untitled, before

    save(page)
    saved = client.get(f"/user/alice/api/contents/{untitled}", params={"content": "0"})
    assert saved.status_code == 200, saved.text
    rename(page, NEW_NAME)
    after = status_lines(run_cell(page, len(TRAINING) + 1, STATUS))
    page.screenshot(path=str(artifacts / "jupyterlab-notebook-alice.png"), full_page=True)
    assert after.get("notebook") == NEW_NAME, after
    assert after.get("run") == before["run"], (before, after)

    shut_down_kernel(page)
    wait_for(lambda: client.get("/user/alice/api/kernels").json() == [], 60, "the kernel to shut down")


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_a_notebook_made_in_jupyterlab_is_tracked_under_its_new_name(
    platform: Any, session_for: Any, artifacts: Any
) -> None:
    from playwright.sync_api import sync_playwright

    with alice_token(platform, session_for) as client, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            console = Console(page)
            log_in(page, platform.url)
            start_server_from_spawn_page(page, platform.url)
            work_in_jupyterlab(page, client, artifacts)

            experiment_id, run, children = wait_for(
                lambda: ended_runs(client), 90, f"the runs in {EXPERIMENT} to end", interval=1
            )
            check_session_run(client, run, children)

            page.goto(f"{platform.url}/services/mlflow/#/experiments/{experiment_id}/runs/{run['info']['run_id']}")
            # The run's page is drawn once its name and its metric show (the sidebar names the experiment sooner).
            page.get_by_text(NEW_NAME, exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
            page.get_by_text("train_accuracy", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "jupyterlab-run-alice.png"), full_page=True)
            assert console.about_hubforge() == [], console.about_hubforge()
        finally:
            browser.close()
