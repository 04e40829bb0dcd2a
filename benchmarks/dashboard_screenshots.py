"""The README's pictures of the dashboard, taken in a real headless Chromium.

    python benchmarks/dashboard_screenshots.py [--out docs/dashboard] [--chromium PATH]

Runs a short real suite (three samplers x two step counts x two seeds, 64 samples, FID
and KID; about a minute on two CPU cores) into a new SQLite store in a temporary folder,
starts `harness dashboard` on it (127.0.0.1, a free port), drives Chromium through the
DevTools protocol over a pipe (no extra package), saves each page as a PNG and stops the
dashboard by its PID. Needs Chromium (Debian: `apt-get install chromium`); no test or CI
job runs it. What each picture must show is checked on the page before it is taken, so
that a changed MLflow fails here instead of producing a misleading picture.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
SUITE_ARGS = ["default", "--samplers", "euler,heun,euler_maruyama", "--steps", "5,10",
              "--num-samples", "64", "--metrics", "fid,kid", "--quiet"]
WINDOW = (1400, 900)
PAGE_LIMIT_S = 90
DASHBOARD_LIMIT_S = 180
#: The MLflow Assistant side panel opens by itself in a new browser; it is closed first.
ASSISTANT_CLOSE = '[data-component-id="mlflow.assistant.chat_panel.close"]'
NOTE_EXPAND = '[data-component-id="mlflow.experiment.metadata_editor.expand_button"]'


def harness_command() -> list[str]:
    found = Path(sys.executable).with_name("harness")
    return [str(found)] if found.is_file() else [sys.executable, "-m", "harness.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Browser:
    """Headless Chromium spoken to with the DevTools protocol over --remote-debugging-pipe
    (JSON messages separated by NUL bytes on file descriptors 3 and 4)."""

    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 f"--user-data-dir={self.profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 "--remote-debugging-pipe", "about:blank"]
        # The shell puts the pipe ends on the descriptors Chromium reads and writes.
        script = f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}'
        self.process = subprocess.Popen(["sh", "-c", script, executable, *flags],
                                        pass_fds=(to_browser, from_browser),
                                        stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.session: Optional[str] = None
        page = next(t for t in self.call("Target.getTargets")["targetInfos"]
                    if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result.get("result", {}).get("value")

    def open(self, url: str, ready: str, what: str) -> None:
        """Load `url` and wait until the JavaScript condition `ready` holds."""
        # From a blank page: a link differing only after the # would not reload the view.
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)
        self.wait(ready, what)
        self.evaluate(f"document.querySelector('{ASSISTANT_CLOSE}')?.click()")
        time.sleep(1.5)  # the panel's closing animation and the table's relayout

    def wait(self, condition: str, what: str) -> None:
        deadline = time.monotonic() + PAGE_LIMIT_S
        while not self.evaluate(f"Boolean({condition})"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the page never showed {what} ({condition})")
            time.sleep(0.5)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def text_shown(*texts: str) -> str:
    """A JavaScript condition: every text is on the page."""
    return " && ".join(f"document.body.innerText.includes({json.dumps(t)})" for t in texts)


def suite_run_id(base: str, experiment: str) -> str:
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search", method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"experiment_ids": [experiment], "max_results": 1,
                         "filter": "tags.`harness.kind` = 'suite'"}).encode())
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)["runs"][0]["info"]["run_id"]


def take(browser: Browser, link: str, base: str, out: Path) -> None:
    # As the README says: the sidebar's switch set to Model training once, which the
    # browser keeps (the pages below are opened without the link's workflowType).
    experiment = link.split("#/experiments/", 1)[1].split("/", 1)[0]
    browser.open(f"{base}/#/experiments/{experiment}", text_shown("Model training"),
                 "the sidebar")
    browser.evaluate("[...document.querySelectorAll('[role=button]')]"
                     ".find(e => e.innerText.trim() == 'Model training').click()")
    browser.wait("location.href.includes('workflowType=machine_learning')",
                 "the model-training view")
    browser.open(link, text_shown("Trials by FID", "fid", "kid", "sampler", "heun-19nfe"),
                 "the trials by FID with their columns")
    browser.screenshot(out / "trials_by_fid.png")

    # Unfolded when the note's last heading sits above the runs' search box.
    last = ("[...document.querySelectorAll('strong')].find(e => e.innerText == 'Charts of a "
            "suite run').getBoundingClientRect().bottom")
    search = "document.querySelector('input').getBoundingClientRect().top"
    browser.evaluate(f"document.querySelector('{NOTE_EXPAND}').click()")
    browser.wait(f"{last} < {search} && {search} < innerHeight",
                 "the experiment's note unfolded")
    time.sleep(1)
    browser.screenshot(out / "experiment_note.png")

    run = f"{base}/#/experiments/{experiment}/runs/{suite_run_id(base, experiment)}"
    browser.open(f"{run}/artifacts/leaderboard_table.json",
                 text_shown("leaderboard_table.json", "euler_maruyama", "[") +
                 " && document.querySelectorAll('table td, [role=cell]').length > 20",
                 "the leaderboard rendered as a table")
    browser.screenshot(out / "leaderboard_table.png")

    browser.open(f"{run}/artifacts/fid_vs_nfe.png",
                 "[...document.images].some(i => i.complete && i.naturalWidth > 300)",
                 "the FID-vs-NFE plot")
    browser.screenshot(out / "fid_vs_nfe.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "dashboard"),
                        help="where the PNGs go (default: docs/dashboard)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium",
                        help="the Chromium executable (default: chromium on PATH)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dashboard-shots-"))
    store = f"sqlite:///{work / 'mlflow.db'}"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    # The working folder is the store's: MLflow puts the artefacts in ./mlruns.
    subprocess.run([*harness_command(), "run", *SUITE_ARGS, "--tracking-uri", store,
                    "--out", str(work / "runs")], cwd=work, env=environment, check=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = subprocess.Popen([*harness_command(), "dashboard", "--tracking-uri", store,
                                  "--port", str(port)], cwd=work, env=environment,
                                 stdout=subprocess.PIPE, text=True)
    browser = None
    try:
        link = wait_for_link(dashboard)
        browser = Browser(args.chromium)
        take(browser, link, base, out)
    finally:
        if browser is not None:
            browser.close()
        dashboard.send_signal(signal.SIGTERM)
        dashboard.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def wait_for_link(dashboard: subprocess.Popen) -> str:
    """The link `harness dashboard` prints for the experiment `default`."""
    deadline = time.monotonic() + DASHBOARD_LIMIT_S
    for line in dashboard.stdout:
        if line.startswith("dashboard of 'default': "):
            # The server logs to the same pipe: keep it drained, or the server blocks.
            threading.Thread(target=dashboard.stdout.read, daemon=True).start()
            return line.split(": ", 1)[1].strip()
        if time.monotonic() > deadline:
            break
    raise RuntimeError("harness dashboard printed no link to the experiment 'default'")


if __name__ == "__main__":
    sys.exit(main())
