"""One-click deploy from JupyterLab: alice's DeployPanel, carol's decision, the served model.

alice has trained and registered a model with a complete card. In JupyterLab, in Debian's
chromium, she opens a notebook, shows the DeployPanel for her version, sees the policy's
pre-check, and clicks Submit. carol approves in her own browser session on the governance
decision page (nothing in alice's notebook could). The panel follows the request until
the model is deployed and shows where it serves; the endpoint answers with alice's token.
Screenshots of the panel before and after are kept.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

from harness.cards import complete_card
from harness.jupyterlab import (
    UI_TIMEOUT_MS,
    alice_token,
    log_in,
    new_notebook_from_launcher,
    notebook,
    run_cell,
    start_server_from_spawn_page,
)
from harness.models import as_person, register_model
from harness.platform import CHROMIUM, CHROMIUM_FLAGS, HubSession, wait_for
from hubforge.modelcard.mlflow_store import save_card

GOV = "/services/governance/api"


def outputs(page: Any) -> Any:
    return notebook(page).locator(".jp-OutputArea-output")


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_alice_deploys_from_the_panel_once_carol_approves(platform: Any, session_for: Any, artifacts: Any) -> None:
    from playwright.sync_api import sync_playwright

    tracking = platform.url + "/services/mlflow"
    with alice_token(platform, session_for) as client, sync_playwright() as pw:
        token = client.headers["Authorization"].split()[1]
        model = register_model(tracking, token, "alice", prefix="panel", slope=2.0)
        with as_person(tracking, token):
            save_card(
                MlflowClient(tracking, registry_uri=tracking), model.name, model.version, complete_card(model.name)
            )
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            log_in(page, platform.url)
            start_server_from_spawn_page(page, platform.url)
            new_notebook_from_launcher(page)
            code = (
                "from hubforge.widgets import DeployPanel\n"
                f'DeployPanel("{model.name}", "{model.version}", justification="from JupyterLab", poll_interval=1)'
            )
            run_cell(page, 0, code)
            outputs(page).get_by_text("The deploy policy allows this request.").wait_for(timeout=UI_TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "deploy-panel-precheck.png"), full_page=True)
            outputs(page).locator("button", has_text="Submit").click(timeout=UI_TIMEOUT_MS)
            outputs(page).get_by_text("Submitted; waiting for").first.wait_for(timeout=UI_TIMEOUT_MS)

            listed = client.get(f"{GOV}/requests", params={"model": model.name}).json()
            assert [(r["requester"], r["status"], r["version"]) for r in listed] == [
                ("alice", "pending", model.version)
            ]
            # alice's notebook holds her server's token: it cannot decide her request, nor anyone's
            refused = client.post(f"{GOV}/requests/{listed[0]['id']}/decision", json={"decision": "approve"})
            assert refused.status_code == 403

            carol = HubSession(platform.url)
            try:
                assert carol.login("carol").status_code == 302
                decided = carol.decide(listed[0]["id"], "approve", "ship it")
                assert decided.status_code == 200, decided.text
            finally:
                carol.close()

            served = outputs(page).get_by_text("Deployed: serving at")
            served.first.wait_for(timeout=240_000)
            page.screenshot(path=str(artifacts / "deploy-panel-deployed.png"), full_page=True)
            endpoint = wait_for(
                lambda: (client.get(f"{GOV}/requests/{listed[0]['id']}").json().get("deployment") or {}).get(
                    "endpoint"
                ),
                30,
                "the endpoint",
            )
            rows = {"dataframe_split": {"columns": ["x"], "data": [[1.0], [4.0]]}}
            answer = httpx.post(endpoint, json=rows, headers={"Authorization": f"token {token}"}, timeout=120)
            assert answer.status_code == 200, answer.text
            assert [round(p, 6) for p in answer.json()["predictions"]] == [2.0, 8.0]
        finally:
            browser.close()
