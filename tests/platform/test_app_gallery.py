"""The app gallery as its people use it, on the running platform (SQLite and PostgreSQL).

alice publishes a notebook from the command line with her own hub token, shared with the
analysts. frank, an analyst, logs in in Debian's chromium and lands on the gallery, finds
the app by searching, opens it: his own server starts on the apps tier (Voila only) and
renders the app there, as frank. bob, whom the app is not shared with, gets the 404 of an
app that does not exist. Screenshots of the gallery and the app are kept.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

from harness.jupyterlab import UI_TIMEOUT_MS, log_in
from harness.platform import CHROMIUM, CHROMIUM_FLAGS, HubSession, api, wait_for

APPS = "/services/apps"


def app_notebook() -> dict[str, Any]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Regional sales\nSales by region, for the weekly review."),
        nbformat.v4.new_code_cell("region = 'emea'\nweeks = 4", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import os, pwd\n"
            "print(f'sales for {region} over {weeks} weeks')\n"
            "print('viewer', os.environ['JUPYTERHUB_USER'], 'account', pwd.getpwuid(os.getuid()).pw_name)\n"
        ),
    ]
    return json.loads(nbformat.writes(nb))


def publish_as_alice(platform: Any, token: str, tmp_path: Path) -> None:
    path = tmp_path / "Regional sales.ipynb"
    path.write_text(json.dumps(app_notebook()))
    env = {**os.environ, "HUBFORGE_APPS_URL": platform.url + APPS, "JUPYTERHUB_API_TOKEN": token}
    env["JUPYTERHUB_USER"] = "alice"
    hubforge = Path(sys.executable).with_name("hubforge")
    command = [str(hubforge), "apps", "publish", str(path), "--name", "regional-sales", "--share", "analyst",
               "--description", "Weekly sales by region"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "published alice/regional-sales version" in done.stdout


def test_frank_finds_and_opens_an_app_as_himself(platform: Any, tmp_path: Path, artifacts: Path) -> None:
    from playwright.sync_api import sync_playwright

    alice, bob, erin = HubSession(platform.url), HubSession(platform.url), HubSession(platform.url)
    try:
        for session, name in ((alice, "alice"), (bob, "bob"), (erin, "erin")):
            assert session.login(name).status_code == 302
        publish_as_alice(platform, alice.new_token("alice", note="publish"), tmp_path)
        with api(platform.url, bob.new_token("bob", note="apps")) as as_bob:
            assert as_bob.get(f"{APPS}/api/apps/alice/regional-sales").status_code == 404
            assert as_bob.get(f"{APPS}/api/apps").json()["apps"] == []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            try:
                log_in(page, platform.url, "frank")
                page.wait_for_url(re.compile(r"/services/apps/"), timeout=UI_TIMEOUT_MS)  # analysts land here
                page.fill('input[name="q"]', "sales")
                page.keyboard.press("Enter")
                card = page.locator('article.card[data-app="alice/regional-sales"]')
                card.wait_for(timeout=UI_TIMEOUT_MS)
                assert "Weekly sales by region" in card.inner_text() and "by alice" in card.inner_text()
                page.screenshot(path=str(artifacts / "app-gallery.png"), full_page=True)
                card.locator("a.open").click()
                # frank's server is not running: the hub offers to start it, on the apps tier only.
                page.wait_for_url(re.compile(r"/hub/(user|spawn)/frank"), timeout=UI_TIMEOUT_MS)
                if "/hub/spawn/" not in page.url:
                    page.locator("#start").click(timeout=UI_TIMEOUT_MS)
                    page.wait_for_url(re.compile(r"/hub/spawn"), timeout=UI_TIMEOUT_MS)
                tiers = page.locator('input[name="profile"]')
                assert [tiers.nth(i).get_attribute("value") for i in range(tiers.count())] == ["apps"]
                page.locator('#spawn_form input[type="submit"], #spawn_form button[type="submit"]').first.click()
                page.wait_for_url(re.compile(r"/user/frank/voila/render/hubforge-apps/alice/regional-sales"),
                                  timeout=180_000)  # fmt: skip
                page.get_by_text("sales for emea over 4 weeks").wait_for(timeout=UI_TIMEOUT_MS)
                shown = page.locator("body").inner_text()
                assert "viewer frank" in shown
                account = platform.account("frank")
                assert f"account {account.pw_name if account else pwd.getpwuid(os.getuid()).pw_name}" in shown
                page.screenshot(path=str(artifacts / "app-opened.png"), full_page=True)
                page.goto(f"{platform.url}/user/frank/lab")
                assert page.locator(".jp-LabShell").count() == 0  # no JupyterLab on an analyst's server
            finally:
                browser.close()
    finally:
        with api(platform.url, erin.new_token("erin", note="cleanup")) as as_erin:  # a hub admin
            as_erin.delete("/hub/api/users/frank/server")
            wait_for(lambda: not as_erin.get("/hub/api/users/frank").json()["servers"], 60, "frank's server to stop")
        for session in (alice, bob, erin):
            session.close()
