"""Driving the hub and JupyterLab in a browser as a person does (Playwright, Debian chromium).

Shared by the platform tests that work in JupyterLab: log in through the form, start a
server from the spawn page, open a notebook from the Launcher, type and run cells at a
person's pace.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from harness.platform import DEMO_PASSWORD, api, wait_for

UI_TIMEOUT_MS = 60_000
PACE_MS = 500


def log_in(page: Any, hub: str, user: str = "alice") -> None:
    """The hub's login form, as a person fills it."""
    page.goto(f"{hub}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", DEMO_PASSWORD)
    page.click("#login_submit")
    page.wait_for_url(lambda url: "/hub/login" not in url, timeout=UI_TIMEOUT_MS)


def start_server_from_spawn_page(page: Any, hub: str) -> None:
    """Pick the default ("interactive") tier card, start, and wait for JupyterLab, on a fresh
    workspace (JupyterLab would reopen what an earlier test left open, not the Launcher)."""
    page.goto(f"{hub}/hub/spawn/alice")
    page.locator('input[name="profile"][value="interactive"]').check(timeout=UI_TIMEOUT_MS)
    page.locator('#spawn_form input[type="submit"], #spawn_form button[type="submit"]').first.click()
    page.wait_for_url(re.compile(r"/user/alice/"), timeout=120_000)
    page.goto(f"{hub}/user/alice/lab?reset")


def server_stopped(client: httpx.Client) -> bool:
    return not client.get("/hub/api/users/alice").json()["servers"]


@contextmanager
def alice_token(platform: Any, session_for: Any) -> Iterator[httpx.Client]:
    """alice's API client (her own hub token); her server is stopped through the REST API at the end."""
    session, user = session_for("data-scientist")
    assert user == "alice"
    with api(platform.url, session.new_token(user, note="jupyterlab tracking")) as client:
        try:
            yield client
        finally:
            client.delete("/hub/api/users/alice/server")
            wait_for(lambda: server_stopped(client), 60, "alice's server to stop")


# --- JupyterLab, as a person drives it ----------------------------------------------------------


def new_notebook_from_launcher(page: Any) -> str:
    """Click the Launcher's Python 3 notebook card; the new notebook's name (Untitled*.ipynb)."""
    card = page.locator('.jp-LauncherCard[data-category="Notebook"]', has_text="Python 3").first
    card.click(timeout=UI_TIMEOUT_MS)
    tab = current_tab(page)
    tab_name = re.compile(r"^Untitled\d*\.ipynb$")
    page.wait_for_function(
        "() => /^Untitled\\d*\\.ipynb$/.test("
        "document.querySelector('.lm-DockPanel .lm-TabBar-tab.jp-mod-current .lm-TabBar-tabLabel')?.textContent)",
        timeout=UI_TIMEOUT_MS,
    )
    name = tab.locator(".lm-TabBar-tabLabel").inner_text().strip()
    assert tab_name.match(name), name
    notebook(page).locator(".jp-CodeCell .cm-content").first.wait_for(timeout=UI_TIMEOUT_MS)
    return name


def current_tab(page: Any) -> Any:
    return page.locator(".lm-DockPanel .lm-TabBar-tab.jp-mod-current")


def notebook(page: Any) -> Any:
    """The notebook in the main area's current tab."""
    return page.locator(".jp-NotebookPanel:visible .jp-Notebook")


def run_cell(page: Any, index: int, code: str) -> Any:
    """Type ``code`` into cell ``index``, Shift+Enter, wait for its execution count; the cell."""
    cell = notebook(page).locator(".jp-CodeCell").nth(index)
    editor = cell.locator(".cm-content")
    editor.click(timeout=UI_TIMEOUT_MS)
    # insert_text, not type: JupyterLab would auto-close the brackets a person types.
    page.keyboard.insert_text(code)
    assert editor.inner_text().strip() == code, editor.inner_text()
    page.wait_for_timeout(PACE_MS)
    page.keyboard.press("Shift+Enter")
    prompt = cell.locator(".jp-InputPrompt")
    prompt.filter(has_text=re.compile(r"\[\d+\]")).wait_for(timeout=UI_TIMEOUT_MS)
    page.wait_for_timeout(PACE_MS)
    return cell
