"""The reviewer page in a real Chromium (Debian's package, driven by Playwright; D6's recipe)."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

import thoth_nb

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def test_page_is_served_without_a_build_step(live: Any) -> None:
    anon = live.client(None)
    for path in ("/", "/review"):
        page = anon.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/static/review.js"' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
    script = anon.get("/static/review.js")
    assert script.status_code == 200 and "/v1/approvals" in script.text and "sessionStorage" in script.text
    assert anon.get("/static/nope.js").status_code == 404


@pytest.mark.browser
def test_approve_in_the_browser_resumes_the_waiting_call(live: Any) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install playwright")

    calls: list[Any] = []

    def transfer(to: str, amount: int) -> str:
        calls.append((to, amount))
        return f"sent {amount} to {to}"

    session = str(uuid.uuid4())
    governed = thoth_nb.instrument(
        transfer, api_url=live.url, api_key=live.key("acme", "agent"), agent_id="agent-7", tenant_id="acme",
        approved_scope=["transfer"], enforcement="step_up", session_id=session, step_up_poll_interval_ms=5000,
    )
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = governed(to="bob", amount=500)
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    waiting = threading.Thread(target=run)
    waiting.start()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live.url}/#key={live.key('acme', 'reviewer')}")
            row = page.locator("#approvals-body tr")
            row.first.wait_for(timeout=10_000)
            text = row.first.inner_text()
            assert "transfer" in text and '"amount": 500' in text and "agent-7" in text
            assert "transfers over 100 need a human" in text and "75" in text
            assert "m " in row.first.locator("td.time-left").inner_text()  # e.g. "14m 58s"
            assert "#key=" not in page.url  # the key left the address bar for sessionStorage

            row.first.locator("input.note").fill("known payee")
            clicked = time.monotonic()
            row.first.locator("button.approve").click()
            waiting.join(5)
            assert outcome.get("result") == "sent 500 to bob", outcome
            lag = outcome["at"] - clicked
            print(f"browser click-to-resume: {lag * 1000:.0f} ms")
            assert lag < 1.5
            page.locator("#status").filter(has_text="approved").wait_for(timeout=5_000)
            page.locator("#approvals-empty").wait_for(state="visible", timeout=5_000)

            assert thoth_nb.flush(timeout=10)
            page.click("button[data-tab=sessions]")
            page.locator("#sessions-body tr").first.wait_for(timeout=5_000)
            assert "agent-7" in page.locator("#sessions-body").inner_text()
            page.click("button[data-tab=violations]")
            page.locator("#violations-body tr").first.wait_for(timeout=5_000)
            violations = page.locator("#violations-body").inner_text()
            assert "transfer" in violations and "STEP_UP" in violations

            # a wrong key is reported on the page, and nothing is shown
            page.evaluate("sessionStorage.setItem('thoth_key', 'thk_wrong')")
            page.reload()
            page.locator("#status.error").filter(has_text="401").wait_for(timeout=5_000)
        finally:
            browser.close()
    assert calls == [("bob", 500)]
    record = httpx.get(f"{live.url}/v1/approvals", params={"status": "approved"},
                       headers={"x-api-key": live.key("acme", "reviewer")}, trust_env=False).json()["items"][0]
    assert record["reviewer"] == "reviewer page" and record["note"] == "known payee"
    assert record["grant_scope"] == "once"
