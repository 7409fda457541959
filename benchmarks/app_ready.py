"""How long a user waits: `make app`'s page from start to a ready chat input, then to the first answer.

    python benchmarks/app_ready.py            # writes benchmarks/results/app_ready.md

Starts `streamlit run streamlit_app.py` the way `make app` does (on a free port, a scratch trace store),
opens it in Debian's chromium through Playwright, and times three moments from the process start: the
page's health endpoint answers, the Ask page's chat input is drawn (the pool's llama.cpp servers are up),
and the first question's answer is on the page. The install and `routegraph prepare` steps of `make app`
are timed separately by the caller (their figures go in the report's notes), since on a machine that has
run them once they are no-ops.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
CHROMIUM = "/usr/bin/chromium"
QUESTION = "What is the capital of France?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(scratch: Path) -> dict[str, float | str]:
    from playwright.sync_api import expect, sync_playwright

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEGRAPH_")}
    env.update(
        ROUTEGRAPH_DATABASE_URL=f"sqlite:///{scratch / 'traces.db'}",
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        TMPDIR=str(scratch),
    )
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    started = time.perf_counter()
    with (scratch / "streamlit.log").open("wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    marks: dict[str, float | str] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.perf_counter() - started > 120:
                raise SystemExit(f"streamlit did not come up; see {scratch / 'streamlit.log'}")
            time.sleep(0.2)
        marks["healthy_s"] = time.perf_counter() - started
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url)
            chat = page.get_by_test_id("stChatInputTextArea")
            expect(chat).to_be_visible(timeout=300_000)
            marks["ready_s"] = time.perf_counter() - started
            chat.fill(QUESTION)
            asked = time.perf_counter()
            chat.press("Enter")
            answer = page.get_by_role("main").locator("p").filter(has_text=re.compile(r"^Answer:"))
            expect(answer).to_be_visible(timeout=300_000)
            marks["first_answer_s"] = time.perf_counter() - asked
            marks["answer"] = answer.inner_text()
            browser.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--note", default="", help="A line for the report (e.g. the install's timing).")
    args = parser.parse_args()
    rows = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as scratch:
            rows.append(measure(Path(scratch)))
            print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    lines = [
        "# Time to a ready page and to the first answer (`make app`, embedded default pool)",
        "",
        f"`python benchmarks/app_ready.py` · {time.strftime('%Y-%m-%d')} · Python {platform.python_version()}"
        f" · {platform.machine()} CPU, {os.cpu_count()} cores · load average {load:.1f} at the end",
        "",
        "From `streamlit run` starting (what `make app` runs once the install and weights are in place): the",
        "page's health check answers; the Ask page's chat input is drawn (the pool's llama.cpp servers have",
        f'started); then "{QUESTION}" typed and its answer on the page.',
        "",
        "| run | page healthy | chat input ready | first answer (after Enter) | answer |",
        "|---:|---:|---:|---:|---|",
    ]
    for index, row in enumerate(rows, 1):
        lines.append(
            f"| {index} | {row['healthy_s']:.1f} s | {row['ready_s']:.1f} s | {row['first_answer_s']:.1f} s "
            f"| {row['answer']} |"
        )
    if args.note:
        lines += ["", args.note]
    (RESULTS / "app_ready.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'app_ready.md'}")


if __name__ == "__main__":
    main()
