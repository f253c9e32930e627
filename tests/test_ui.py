"""The status page in a real headless Chromium (Debian's chromium and chromedriver, driven by selenium), served
by the real proxy app over the demo's database, with models really resident in the emulator.

It logs in through the form as a browser would (the admin token is set, so the guard is on), then reads
what a person would look at: the VRAM bar's resident models and the forecast heat of the demo's last
forecast. The screenshot goes to the test's folder, and to $PREWARM_UI_SCREENSHOT when that is set (how
the README's picture is made).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from prewarm.admin import make_service_app
from prewarm.backends import OllamaBackend
from prewarm.catalog import load_catalog, sample_catalog_path
from prewarm.config import Settings
from prewarm.emulator import make_app as make_emulator_app
from prewarm.prewarmer import Prewarmer
from prewarm.store import Store

TOKEN = "s3cret-ui-token"
GB = 10**9
RESIDENT = ("llama3.2:3b", "gemma2:9b")

pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them; in CI this test never skips)",
)


def _browser(profile: Path):  # -> selenium WebDriver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    # This machine has no outside network: without the background-networking flags Chromium keeps trying.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1250", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))


def _drive(base: str, shot: Path, profile: Path) -> dict:
    """Everything the browser does, in a worker thread (selenium blocks; the servers run on the test's loop)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser(profile)
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(base + "/prewarm/ui")
        wait.until(ec.presence_of_element_located((By.ID, "token")))
        seen: dict = {"login_url": driver.current_url}
        driver.find_element(By.ID, "token").send_keys("wrong")
        driver.find_element(By.ID, "login").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "not the admin token"))
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: d.execute_script("return document.body.dataset.loaded") == "1")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.resident-model")) >= len(RESIDENT))
        seen["url"] = driver.current_url
        seen["cookies"] = driver.get_cookies()
        seen["resident"] = [e.get_attribute("data-model") for e in driver.find_elements(By.CSS_SELECTOR, "li.resident-model")]
        seen["bar_segments"] = len(driver.find_elements(By.CSS_SELECTOR, "#vram-bar div"))
        seen["heat_rows"] = [e.get_attribute("data-model") for e in driver.find_elements(By.CSS_SELECTOR, "tr.heat-row")]
        seen["forecast_cells"] = len(driver.find_elements(By.CSS_SELECTOR, "tr.heat-row td.fc"))
        seen["vram_summary"] = driver.find_element(By.ID, "vram-summary").text
        seen["day_summary"] = driver.find_element(By.ID, "day-summary").text
        seen["actions_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#actions tbody tr"))
        seen["error_shown"] = driver.find_element(By.ID, "error").is_displayed()
        driver.save_screenshot(str(shot))
        seen["page_js_cookie"] = driver.execute_script("return document.cookie")
        return seen
    finally:
        driver.quit()


async def test_status_page_in_a_real_browser(demo_run, aiohttp_server, tmp_path: Path) -> None:
    out, workdir = demo_run
    assert out.returncode == 0, out.stderr[-3000:]
    db = tmp_path / "demo.duckdb"
    shutil.copy(workdir / "demo.duckdb", db)  # the session's demo folder stays as the demo left it

    catalog = load_catalog(sample_catalog_path())
    emulator = await aiohttp_server(make_emulator_app(catalog, 24 * GB, time_scale=0.001, tokens_per_second=5000))
    upstream = str(emulator.make_url("")).rstrip("/")
    settings = Settings(upstream=upstream, db=str(db), admin_token=TOKEN, vram_budget=12 * GB, vram_reserve=0,
                        ps_refresh=0.05, log_flush_interval=0.05)
    store = Store(settings.db, settings)
    store.open()
    pw = Prewarmer(settings, OllamaBackend(upstream, catalog), store, catalog=catalog)
    await pw.start()
    try:
        proxy = await aiohttp_server(make_service_app(settings, store, pw, pw))
        base = str(proxy.make_url("")).rstrip("/")
        for model in RESIDENT:
            assert (await pw.load_now(model))["ok"]

        shot = tmp_path / "ui.png"
        seen = await asyncio.to_thread(_drive, base, shot, tmp_path / "chromium-profile")
    finally:
        await pw.stop()
        await store.close()

    assert seen["login_url"].endswith("/prewarm/login")  # no session: sent to the form, not shown a 401
    assert TOKEN not in seen["url"] and seen["url"].endswith("/prewarm/ui")  # the token never rides in a URL
    session = [c for c in seen["cookies"] if c["name"] == "prewarm_session"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
    assert "prewarm_session" not in seen["page_js_cookie"]  # HttpOnly: the page's script cannot read it
    assert sorted(seen["resident"]) == sorted(RESIDENT) and seen["bar_segments"] == len(RESIDENT)
    assert "of a 12 GB budget" in seen["vram_summary"]
    assert len(seen["heat_rows"]) >= 5 and seen["forecast_cells"] > 0  # the demo's last forecast, model by model
    assert set(RESIDENT) <= set(seen["heat_rows"]) or len(seen["heat_rows"]) == 16
    assert "cold starts" in seen["day_summary"] and seen["actions_rows"] > 0
    assert not seen["error_shown"]
    assert shot.stat().st_size > 20_000
    if target := os.environ.get("PREWARM_UI_SCREENSHOT"):
        shutil.copy(shot, target)


async def test_status_page_without_a_session(aiohttp_client, tmp_path: Path) -> None:
    """The guard as a browser meets it: the page redirects to the form, the data answers 401, a cookie never
    opens a POST, a wrong token costs a 401 form, and logging out ends the session."""
    settings = Settings(db=str(tmp_path / "x.duckdb"), admin_token=TOKEN, listen="10.1.2.3:11435")
    store = Store(settings.db, settings)
    store.open()
    catalog = load_catalog(sample_catalog_path())
    pw = Prewarmer(settings, OllamaBackend("http://127.0.0.1:9", catalog), store, catalog=catalog)
    client = await aiohttp_client(make_service_app(settings, store, pw, pw))
    try:
        r = await client.get("/prewarm/ui", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/prewarm/login"
        assert (await client.get("/prewarm/ui/data")).status == 401
        bad = await client.post("/prewarm/login", data={"token": "nope"}, allow_redirects=False)
        assert bad.status == 401 and "not the admin token" in await bad.text()
        ok = await client.post("/prewarm/login", data={"token": TOKEN}, allow_redirects=False)
        assert ok.status == 303 and "prewarm_session" in ok.cookies
        cookie = ok.cookies["prewarm_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/prewarm"
        jar = {"prewarm_session": cookie.value}
        data = await client.get("/prewarm/ui/data", cookies=jar)
        assert data.status == 200 and set(await data.json()) >= {"status", "heat", "day", "actions", "training_runs"}
        assert (await client.get("/prewarm/status", cookies=jar)).status == 200  # any read-only admin route
        assert (await client.post("/prewarm/pin/x", cookies=jar)).status == 401  # a cookie never opens a POST
        await client.post("/prewarm/logout", cookies=jar, allow_redirects=False)
        assert (await client.get("/prewarm/ui/data", cookies=jar)).status == 401
    finally:
        await client.close()
        await store.close()


def test_page_puts_server_values_in_as_text_only() -> None:
    """Model and user names are chosen by clients: the page must never hand them to the HTML parser."""
    page = (Path(__file__).parents[1] / "prewarm" / "admin" / "static" / "ui.html").read_text()
    assert "innerHTML" not in page and "outerHTML" not in page and "insertAdjacentHTML" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # no CDN
