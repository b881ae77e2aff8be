"""The daemon's pages in a real browser: Debian's chromium driven by selenium.

One daemon and one browser for the module. A known scenario goes in over HTTP; each page must
show what the engine holds (compared with GET /v1/state), the live page must move when
events arrive, a participant's page must refuse another participant's link, and every page
must fit a 390 px phone. Screenshots go to the test's tmp directory; with
REWARDCORE_DOCS_IMG=1 they are also written to docs/img/ (how the docs' pictures are made).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rewardcore.daemon.pages import page_secret, participant_path
from rewardcore.winners import mask_id

from .campaigns import IN_WINDOW, campaign_toml
from .conftest import EXAMPLES
from .test_daemon import TOKEN, Daemon

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SMALL, BIG = 440305, 440306  # 3 slots of 10 points; 60 slots of 5 points
READ = "read-only-token-for-the-pages"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"no browser: {CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install "
                "chromium chromium-driver; scripts/test does it)", allow_module_level=True)


def placed(order: str, agent: str, region: int, paid: int = 5000, ts: int = IN_WINDOW) -> str:
    return json.dumps({"type": "placed", "order_id": order, "merchant_id": "m-" + agent,
                       "agent_id": agent, "region": region, "paid_cents": paid, "ts": ts})


def scenario() -> list[str]:
    """a1..a3 fill SMALL; a1's 4th order into it is sold out, another is below the minimum;
    60 workers into BIG run into the budget (30 + 58 x 5 = 320) after 58 claims."""
    lines = [placed(f"s{i}", f"agent-{i}", SMALL, ts=IN_WINDOW + i) for i in (1, 2, 3)]
    lines.append(placed("s4", "agent-1", SMALL, ts=IN_WINDOW + 10))
    lines.append(placed("cheap", "agent-1", BIG, paid=50, ts=IN_WINDOW + 11))
    lines += [placed(f"b{i}", f"worker-{i:02d}", BIG, ts=IN_WINDOW + 100 + i) for i in range(60)]
    lines.append(json.dumps({"type": "completed", "order_id": "s1", "ts": IN_WINDOW + 500}))
    return lines


class Site:
    def __init__(self, daemon: Daemon, driver: Any, shots: Path) -> None:
        self.daemon = daemon
        self.driver = driver
        self.shots = shots
        self.base = f"http://127.0.0.1:{daemon.port}"
        self.secret = page_secret(TOKEN)

    def open(self, path: str) -> str:
        self.driver.get(self.base + path)
        return self.driver.find_element("tag name", "body").text

    def state(self) -> dict[str, Any]:
        status, body = self.daemon.get("/v1/state")
        assert status == 200
        return body

    def shot(self, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        if os.environ.get("REWARDCORE_DOCS_IMG"):
            (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(ROOT / "docs" / "img" / f"{name}.png"))

    def fits_the_phone(self) -> bool:
        width, inner = self.driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        return width <= inner

    def phone(self) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})

    def desktop(self, height: int = 1400) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1000, "height": height, "deviceScaleFactor": 1, "mobile": False})


def write_campaign(work: Path) -> Path:
    campaign = work / "campaign.toml"
    campaign.write_text(campaign_toml(
        regions=((SMALL, 3, ((3, 10),)), (BIG, 60, ((60, 5),))),
        prizes=(("mug", 10, 5), ("lamp", 50, 5)),
        budget_points=320, min_paid_cents=100))
    return campaign


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from selenium.webdriver.chrome.service import Service

    work = tmp_path_factory.mktemp("pages")
    daemon = Daemon(work, write_campaign(work), env={"REWARDCORE_READ_TOKEN": READ}).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=work)
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        status, _ = daemon.post("/v1/events", "\n".join(scenario()).encode())
        assert status == 200
        s = Site(daemon, driver, work / "screenshots")
        s.phone()
        yield s
    finally:
        driver.quit()
        daemon.stop()
        daemon.kill()


def test_participant_page_shows_what_the_engine_holds(site):
    state = site.state()
    want = state["balances"]["agent-1"]
    claims = [c for c in state["claims"] if c["beneficiary"] == "agent-1"]
    site.driver.delete_all_cookies()  # the link alone opens the page
    text = site.open(participant_path(site.secret, "agent-1"))
    cards = {el.get_attribute("id"): el.text
             for el in site.driver.find_elements("css selector", ".card b")}
    assert cards == {"available": f"{want['confirmed'] - want['redeemed']:,}",
                     "pending": f"{want['pending']:,}", "confirmed": f"{want['confirmed']:,}",
                     "redeemed": f"{want['redeemed']:,}"}
    assert f"Your winning orders ({len(claims)})" in text
    assert re.search(rf"{SMALL} 1 (1st )?10 confirmed", text)  # the rank when the engine has it
    # what the points buy now, and what is missing for the rest
    assert "mug 10 you can redeem it now" in text
    assert "lamp 50 40 more confirmed points needed" in text
    # why the other orders earned nothing
    assert re.search(rf"s4 .*: your order (was the 4th into|went into) region {SMALL}", text) \
        or f"region {SMALL} had given all its 3 slots" in text
    assert "cheap" in text and "less than the minimum of 1.00 yuan" in text
    assert site.fits_the_phone()
    site.shot("page-participant")


def test_participant_page_refuses_a_wrong_link(site):
    site.driver.delete_all_cookies()
    other = participant_path(site.secret, "agent-2").split("?", 1)[1]
    text = site.open(f"/p/agent-1?{other}")
    assert "not valid for this participant" in text and "agent-1" not in text
    text = site.open("/p/agent-1")
    assert "not valid" in text
    status, _, _ = site.daemon.request("GET", f"/p/agent-1?{other}", token=None)
    assert status == 403
    # an operator's token opens any participant's page
    text = site.open(f"/p/agent-2?token={TOKEN}")
    assert "Your winning orders (1)" in text
    assert "token=" not in site.driver.current_url  # moved into a cookie


def test_winners_page_lists_the_engines_winners_searchable_and_paginated(site):
    site.driver.delete_all_cookies()
    assert "not public" in site.open("/winners")
    winners = [c for c in site.state()["claims"] if c["state"] != "revoked"]
    assert len(winners) == 3 + 58
    text = site.open(f"/winners?token={TOKEN}")
    assert f"{len(winners)} slot(s) held in 2 region(s); page 1 of 2." in text
    rows = site.driver.find_elements("css selector", "tbody tr")
    assert len(rows) == 50
    first = rows[0].text.split()
    assert first[:3] == [str(SMALL), "1", mask_id("agent-1")]
    assert "agent-1" not in text  # ids are masked
    site.driver.find_element("link text", "next →").click()
    assert len(site.driver.find_elements("css selector", "tbody tr")) == len(winners) - 50
    # a participant types their own id: the page masks it the same way and finds their slot
    text = site.open("/winners?q=worker-07")
    assert "1 slot(s) held in 1 region(s)." in text and mask_id("worker-07") in text
    text = site.open(f"/winners?region={SMALL}")
    assert f"Region {SMALL}: 3 slots, 3 held now." in text
    assert site.fits_the_phone()
    site.open("/winners")
    site.shot("page-winners")


def test_public_winners_need_no_token(tmp_path):
    daemon = Daemon(tmp_path, write_campaign(tmp_path), "--public-winners").start()
    try:
        status, _ = daemon.post("/v1/events", "\n".join(scenario()[:3]).encode())
        assert status == 200
        status, _, body = daemon.request("GET", "/winners", token=None)
        assert status == 200 and "3 slot(s) held in 1 region(s)." in body.decode()
        status, _, _ = daemon.request("GET", "/live", token=None)
        assert status == 403  # the operators' page still needs a token
    finally:
        daemon.stop()
        daemon.kill()


def test_live_page_moves_when_events_arrive(site):
    from selenium.webdriver.support.ui import WebDriverWait

    site.driver.delete_all_cookies()
    assert "for the campaign's operators" in site.open("/live")
    site.open(f"/live?token={READ}")  # the read-only token is enough
    events = site.driver.find_element("id", "events")
    WebDriverWait(site.driver, 30).until(lambda d: events.text not in ("", "-"))
    before = int(events.text.replace(",", ""))
    _, health = site.daemon.get("/healthz", token=None)
    assert before == health["events"]
    more = [placed(f"late{i}", "agent-9", SMALL, ts=IN_WINDOW + 900 + i) for i in range(5)]
    status, _ = site.daemon.post("/v1/events", "\n".join(more).encode())
    assert status == 200
    WebDriverWait(site.driver, 30).until(
        lambda d: events.text.replace(",", "") == str(before + 5))
    text = site.driver.find_element("tag name", "body").text
    state = site.state()
    held = sum(c["points"] for c in state["claims"] if c["state"] != "revoked")
    assert f"{held:,} of 320" in text
    assert re.search(r"sold_out\s+6", text)  # s4 and the 5 late orders
    assert re.search(rf"{SMALL}\s+9\s+0 of 3\s+sold out", text)
    assert site.fits_the_phone()
    site.shot("page-live")


def test_report_opens_with_why_people_earned_nothing(site, tmp_path):
    """The simulate report in the same browser: its headline is on screen first."""
    from rewardcore.cli import main

    report = tmp_path / "report.html"
    code = main(["simulate", str(EXAMPLES / "d11-2026.toml"), "--orders", "60000",
                 "--seed", "3", "--report", str(report), "--quiet"])
    assert code == 0
    site.desktop(1500)
    try:
        site.driver.get(report.as_uri())
        head = site.driver.find_element("id", "headline")
        assert head.is_displayed() and head.location["y"] < 500
        assert "won a slot" in head.text and "earned nothing" in head.text
        site.shot("report")
    finally:
        site.phone()
