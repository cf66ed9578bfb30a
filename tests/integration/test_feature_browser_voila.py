"""The feature catalog as a Voila app, as an analyst opens it: the shipped app notebook
rendered by a real jupyter-server's Voila, its kernel reading the catalog from a real
features service with the server's token, driven in Debian's chromium."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness.features import SERVICE_TOKEN, USERS, FeaturesProcess, catalog, view
from harness.hub import running_hub
from harness.platform import CHROMIUM, CHROMIUM_FLAGS
from harness.server import TOKEN, Server

APP = Path(__file__).resolve().parents[2] / "widgets" / "apps" / "Feature catalog.ipynb"


def test_an_analyst_searches_the_catalog_in_the_voila_app(tmp_path: Path, artifacts: Any) -> None:
    from playwright.sync_api import sync_playwright

    with running_hub(USERS, SERVICE_TOKEN) as hub:
        features = FeaturesProcess(hub, tmp_path / "data")
        server = None
        try:
            features.write(catalog([
                view("customer_profile", "Plan and tenure of each customer.", sensitivity="confidential"),
                view("merchant_risk", "Chargebacks and ticket size of each merchant."),
            ]))  # fmt: skip
            env = {"HUBFORGE_FEATURES_URL": features.url, "JUPYTERHUB_API_TOKEN": "alice-token"}
            server = Server(tmp_path / "server", env)
            shutil.copy(APP, server.root / "work" / APP.name)
            url = f"http://127.0.0.1:{server.port}/voila/render/work/Feature%20catalog.ipynb?token={TOKEN}"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
                try:
                    page = browser.new_page(viewport={"width": 1300, "height": 900})
                    page.goto(url, timeout=120_000)
                    page.get_by_text("payments: 2 feature views").wait_for(timeout=120_000)
                    page.get_by_placeholder("Search names, descriptions, owners, tags").click()
                    page.keyboard.type("charge", delay=100)
                    options = page.locator("select option")
                    options.first.wait_for(state="attached", timeout=30_000)
                    assert options.first.inner_text().startswith("merchant_risk")
                    page.locator("select").first.select_option(index=0)
                    page.get_by_text("OnlineFeatures.from_env()").first.wait_for(timeout=30_000)
                    page.screenshot(path=str(artifacts / "feature-browser-voila.png"), full_page=True)
                    # An analyst sees no code cell and no traceback: only the app.
                    assert "Traceback" not in page.content()
                    assert page.locator(".jp-InputArea-editor").count() == 0
                finally:
                    browser.close()
        finally:
            if server is not None:
                server.stop()
            features.stop()
