"""The Streamlit app in a real browser (Debian's chromium via Playwright) on the embedded default pool: the
France question is answered "Paris", the answer first with its numbers, the hops in a timeline below."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from app.config import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
QUESTION = "What is the capital of France?"
ANSWER_TIMEOUT_MS = 180_000  # router and model calls on 2 CPU cores


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pool_model_names() -> list[str]:
    pool = yaml.safe_load((PROJECT_ROOT / "pools" / "local.yaml").read_text())
    return [pool["router"]["name"], *(m["name"] for m in pool["models"])]


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM streamlit's process group (it and its llama.cpp servers), then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    deadline = time.monotonic() + 10  # its servers stop at its exit; give them a moment
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def streamlit_url(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEGRAPH_")}
    env.update(
        ROUTEGRAPH_DATABASE_URL=f"sqlite:///{tmp_path / 'traces.db'}",
        ROUTEGRAPH_POOL_FILE=str(PROJECT_ROOT / "pools" / "local.yaml"),
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        STREAMLIT_SERVER_FILE_WATCHER_TYPE="none",  # edits elsewhere in the checkout must not rerun the page
        TMPDIR=str(tmp_path),  # the llama.cpp server logs land here
    )
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    log_path = tmp_path / "streamlit.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"streamlit exited: {log_path.read_text()[-2000:]}"
            try:
                if httpx.get(f"{base}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"streamlit not healthy: {log_path.read_text()[-2000:]}"
            time.sleep(0.3)
        yield base
    finally:
        _stop_group(process)


@pytest.mark.timeout(600)
def test_ask_page_in_chromium(streamlit_url: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does this in CI)")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    names = _pool_model_names()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(streamlit_url)  # Ask is the default page
            expect(page.get_by_role("heading", name="Ask")).to_be_visible(timeout=60_000)
            # The chat input is drawn once the pool's llama.cpp servers are up.
            chat = page.get_by_test_id("stChatInputTextArea")
            expect(chat).to_be_visible(timeout=180_000)
            chat.fill(QUESTION)
            chat.press("Enter")

            main = page.get_by_role("main")
            expect(main.get_by_text(QUESTION)).to_be_visible(timeout=30_000)
            summary = main.locator("p").filter(has_text=re.compile(r"^Run #\d+ · \w+ · total "))
            reference = main.get_by_text("the pool's most expensive model, would have cost $")
            try:
                expect(summary).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
                expect(reference).to_be_visible(timeout=30_000)  # the run's last lines
                # "Answer:" is bold; the answer follows it in the same paragraph.
                answer = main.locator("p").filter(has_text=re.compile(r"^Answer:"))
                expect(answer).to_contain_text("Paris")
                expect(main.get_by_test_id("stMetric").first).to_be_visible()  # cost, hops, time, models
                expect(page.get_by_role("img", name="Running...")).to_be_hidden(timeout=30_000)
            finally:
                # Streamlit scrolls inside <main>: grow the viewport so the screenshot holds the whole chat.
                height = main.evaluate("el => el.scrollHeight")
                page.set_viewport_size({"width": 1400, "height": min(max(1000, height + 100), 8000)})
                page.screenshot(path=str(ARTIFACTS / "ask_page.png"))

            errors = page.get_by_test_id("stAlertContentError")
            assert errors.count() == 0, errors.all_inner_texts()
            main.get_by_text(re.compile(r"^\d+ hops$")).click()  # open the collapsed timeline
            hops = main.locator("p").filter(has_text=re.compile(r"^Hop \d+ · "))
            expect(hops.first).to_be_visible(timeout=10_000)
            assert 1 <= hops.count() <= 3
            headers = hops.all_inner_texts()
            assert any(name in text for text in headers for name in names), headers
            assert all(re.search(r"\$\d+\.\d{6}", text) for text in headers), headers
            assert answer.count() == 1
        finally:
            browser.close()
