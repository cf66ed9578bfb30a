"""Finding a feature in JupyterLab: alice's FeatureBrowser on the demo repository.

The demo repository is applied into the running platform's data folder as `make up` does
(`hubforge features apply`, in Feast's environment); the features service the hub
started serves its catalog. In Debian's chromium, alice opens a notebook, shows the
browser, types a word as a person does, picks the view she finds and reads its schema,
lineage and the code that reads it, inserts that code into a new cell (there at once,
through hubforge's JupyterLab extension), runs its online read from her kernel, and is
refused restricted data; the API answers her token and nobody's without one. She asks for
access from the browser (purpose, a week); dan approves on his decision page; her kernel
then reads the view; erin finds the request, the approval and the reads in the audit
trail. Screenshots are kept.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.jupyterlab import (
    UI_TIMEOUT_MS,
    alice_token,
    log_in,
    new_notebook_from_launcher,
    notebook,
    run_cell,
    start_server_from_spawn_page,
)
from harness.platform import CHROMIUM, CHROMIUM_FLAGS, HubSession, api, wait_for

FEATURES = "/services/features/api"
GOV = "/services/governance/api"


def apply_demo(platform: Any) -> None:
    hubforge = Path(sys.executable).with_name("hubforge")
    done = subprocess.run([str(hubforge), "features", "apply", "--config", str(platform.config_path)],
                          env=platform.env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[hubforge] features: catalog: 4 feature views, 2 feature services" in done.stdout


#: Look for the runs that read merchant_risk until the tracker has sent the read (its queue, off the cells).
FIND_RUNS = """import time
for _ in range(90):
    browser.select("feature_view", "merchant_risk"); browser.wait_runs(30)
    if browser.lineage is not None and (browser.lineage.runs or browser.lineage.error):
        break
    time.sleep(1)
print("runs that read merchant_risk:", len(browser.lineage.runs), browser.lineage.error)"""


def request_access(page: Any, panel: Any, client: httpx.Client) -> str:
    """alice picks the restricted view in the browser and asks for a week's access; the request's id."""
    search = panel.get_by_placeholder("Search names, descriptions, owners, tags")
    search.fill("")
    search.click(timeout=UI_TIMEOUT_MS)
    page.keyboard.type("customer prof", delay=120)
    results = panel.locator("select").first
    results.locator("option", has_text="customer_profile").first.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
    results.select_option(label=results.locator("option", has_text="customer_profile").first.inner_text())
    panel.get_by_text("restricted; you hold no access").first.wait_for(timeout=UI_TIMEOUT_MS)
    panel.get_by_placeholder("Purpose: what you will use the data for (for the data steward)").fill(
        "Retrain the churn model on plans and tenure for the Q1 review."
    )
    panel.locator(".widget-dropdown select").first.select_option(label="7 days")
    panel.locator("button", has_text="Request access").click(timeout=UI_TIMEOUT_MS)
    panel.get_by_text("Sent: request").first.wait_for(timeout=UI_TIMEOUT_MS)
    panel.get_by_text("awaits a data steward's decision").first.wait_for(timeout=UI_TIMEOUT_MS)
    listed = client.get(f"{GOV}/requests", params={"kind": "data-access", "status": "pending"}).json()
    (request,) = [r for r in listed if r["target"] == "feature_view:hubforge_demo/customer_profile"]
    assert (request["requester"], request["duration_days"]) == ("alice", 7)
    return str(request["id"])


def erin_reads_the_story(platform: Any, request_id: str) -> None:
    """erin, the platform admin, finds the request, dan's approval and alice's reads in the trail."""
    erin = HubSession(platform.url)
    try:
        assert erin.login("erin").status_code == 302
        token = erin.new_token("erin", "audit")
    finally:
        erin.close()
    with api(platform.url, token) as c:

        def told() -> bool:
            reads = c.get(f"{GOV}/audit/events", params={"type": "features/read/v1", "user": "alice"}).json()
            outcomes = {(e["outcome"], e["event"].get("request_id")) for e in reads["events"]}
            return {("denied", None), ("success", request_id)} <= outcomes

        wait_for(told, 30, "alice's reads in the audit trail")
        asked = c.get(f"{GOV}/audit/events", params={"type": "governance/data_access/v1"}).json()["events"]
        story = {(e["event"]["action"], e["user"]) for e in asked if e["event"].get("request_id") == request_id}
        assert story == {("requested", "alice"), ("approved", "dan")}


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_alice_finds_a_feature_by_typing_and_gets_its_code(platform: Any, session_for: Any, artifacts: Any) -> None:
    from playwright.sync_api import sync_playwright

    apply_demo(platform)
    with alice_token(platform, session_for) as client, sync_playwright() as pw:
        catalog = client.get(f"{FEATURES}/catalog")
        assert catalog.status_code == 200, catalog.text
        assert catalog.json()["project"]["name"] == "hubforge_demo"
        assert httpx.get(f"{platform.url}{FEATURES}/catalog").status_code in (401, 403)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            log_in(page, platform.url)
            start_server_from_spawn_page(page, platform.url)
            new_notebook_from_launcher(page)
            run_cell(page, 0, "from hubforge.widgets import FeatureBrowser\nbrowser = FeatureBrowser()\nbrowser")
            panel = notebook(page).locator(".jp-OutputArea-output")
            panel.get_by_text("hubforge_demo:").wait_for(timeout=UI_TIMEOUT_MS)
            search = panel.get_by_placeholder("Search names, descriptions, owners, tags")
            search.click(timeout=UI_TIMEOUT_MS)
            page.keyboard.type("chargeb", delay=120)  # as a person types: the list follows each key
            results = panel.locator("select").first
            results.locator("option", has_text="merchant_risk").first.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
            assert results.locator("option").first.inner_text().startswith("merchant_risk")
            results.select_option(index=0)
            panel.get_by_text("chargeback_rate_90d").first.wait_for(timeout=UI_TIMEOUT_MS)
            panel.get_by_text("fraud_model_v1").first.wait_for(timeout=UI_TIMEOUT_MS)  # lineage: the service using it
            panel.get_by_text("OnlineFeatures.from_env()").first.wait_for(timeout=UI_TIMEOUT_MS)
            # Insert into notebook: at once (hubforge's JupyterLab extension), in a new cell below the
            # browser's, not run, before any other cell runs; the cells after it move down one.
            panel.locator("button", has_text="Insert into notebook").click(timeout=UI_TIMEOUT_MS)
            inserted = notebook(page).locator(".jp-CodeCell").nth(1)
            inserted.locator(".cm-content", has_text="OnlineFeatures.from_env()").wait_for(timeout=UI_TIMEOUT_MS)
            panel.get_by_text("Inserted below.").first.wait_for(timeout=UI_TIMEOUT_MS)
            assert "merchant_risk:chargeback_rate_90d" in inserted.locator(".cm-content").inner_text()
            assert "[ ]" in inserted.locator(".jp-InputPrompt").inner_text()
            assert notebook(page).locator(".jp-CodeCell").count() == 3  # the browser's, the new one, the empty one
            assert "[1]" in notebook(page).locator(".jp-CodeCell").nth(0).locator(".jp-InputPrompt").inner_text()
            # A glance at real values for a merchant before writing any code.
            panel.locator(".widget-text", has_text="merchant_id").locator("input").fill("501")
            panel.locator("button", has_text="Read").first.click(timeout=UI_TIMEOUT_MS)
            # The first read waits for the service to open its store (the panel's own limit: 120 s).
            panel.locator("th", has_text="value").first.wait_for(timeout=150_000)
            page.screenshot(path=str(artifacts / "feature-browser.png"), full_page=True)
            # The kernel's browser holds the same: what the person sees is what the code would read.
            run_cell(page, 2, "print(browser.selected, 'merchant_risk:chargeback_rate_90d' in browser.snippet)")
            out = notebook(page).locator(".jp-CodeCell").nth(2).locator(".jp-OutputArea-output")
            out.get_by_text("('feature_view', 'merchant_risk') True").wait_for(timeout=UI_TIMEOUT_MS)
            # The code the browser wrote reads online through the platform, from her kernel (no Feast there).
            run_cell(page, 3, 'exec("# Serving" + browser.snippet.split("# Serving", 1)[1])\nprint(sorted(online))')
            out = notebook(page).locator(".jp-CodeCell").nth(3).locator(".jp-OutputArea-output")
            out.get_by_text("'avg_ticket_usd'").wait_for(timeout=UI_TIMEOUT_MS)
            # Restricted data is refused to her, saying how to ask for it.
            restricted = 'OnlineFeatures.from_env().get(["customer_profile:plan"], [{"customer_id": 1001}])'
            run_cell(page, 4, restricted)
            out = notebook(page).locator(".jp-CodeCell").nth(4).locator(".jp-OutputArea-output")
            out.get_by_text("customer_profile is restricted").first.wait_for(timeout=UI_TIMEOUT_MS)
            request_id = request_access(page, panel, client)
            # dan, a data steward, approves on his decision page; nothing in alice's notebook could.
            assert client.post(f"{GOV}/requests/{request_id}/decision", json={"decision": "approve"}).status_code == 403
            dan = HubSession(platform.url)
            try:
                assert dan.login("dan").status_code == 302
                decided = dan.decide(request_id, "approve", "fine for the Q1 churn review")
                assert decided.status_code == 200, decided.text
            finally:
                dan.close()
            panel.locator("button", has_text="Check again").click(timeout=UI_TIMEOUT_MS)
            panel.get_by_text("you hold access until").first.wait_for(timeout=UI_TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "feature-browser-access.png"), full_page=True)
            reread = 'print(sorted(OnlineFeatures.from_env().get(["customer_profile:plan"], [{"customer_id": 1001}])))'
            run_cell(page, 5, reread)
            out = notebook(page).locator(".jp-CodeCell").nth(5).locator(".jp-OutputArea-output")
            out.get_by_text("['customer_id', 'plan']").wait_for(timeout=UI_TIMEOUT_MS)
            erin_reads_the_story(platform, request_id)
            # Her reads were recorded on her notebook's run: the browser finds it (through MLflow's gate).
            run_cell(page, 6, FIND_RUNS)
            out = notebook(page).locator(".jp-CodeCell").nth(6).locator(".jp-OutputArea-output")
            out.get_by_text("runs that read merchant_risk: 1").wait_for(timeout=UI_TIMEOUT_MS)
            panel.get_by_text("Runs and models:").first.wait_for(timeout=UI_TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "feature-browser-runs.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(artifacts / "feature-browser-failed.png"), full_page=True)
            raise
        finally:
            browser.close()
