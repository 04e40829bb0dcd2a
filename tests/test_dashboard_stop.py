"""Stopping the dashboard by a PID stops the server listening on its port.

`mlflow ui` serves from a child process; stopped by its PID alone, or started by a tool
that does not pass a SIGTERM on (tox), it used to leave that child listening. Here the
dashboard is started as the README says (`harness dashboard`, on 127.0.0.1 and a free
port), and is stopped by SIGTERM to the PID that was started; the port must stop
accepting connections within seconds. The cases where the server is one more process
away (the process that started the dashboard is killed, as tox is; the dashboard itself
is killed outright) use a stand-in server that, like `mlflow ui`, listens from a child
process: it starts in a fraction of a second, where `mlflow ui` takes ten or more.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.bench_support import SERVER_START_LIMIT_S, client_for, free_port

#: How soon after the signal the port must be closed.
CLOSED_WITHIN_S = 15
#: Listens on 127.0.0.1:PORT and answers; ends by itself after two minutes, should a
#: failed test leave it behind.
LISTENER = textwrap.dedent("""
    import socket, sys, time
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen()
    server.settimeout(0.5)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        try:
            server.accept()[0].close()
        except OSError:
            pass
""")
#: Runs LISTENER in a child process and passes SIGTERM on to it, as `mlflow ui` does
#: with its uvicorn.
STAND_IN = textwrap.dedent("""
    import signal, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    sys.exit(child.wait())
""")
#: The dashboard's supervision around the stand-in: `harness dashboard` without mlflow.
SUPERVISED = ("import sys; from harness.commands.dashboard import supervise; "
              "sys.exit(supervise([sys.executable, '-c', *sys.argv[1:]]))")
#: A launcher like tox: runs the command and has no handler of its own for SIGTERM.
LAUNCHER = "import subprocess, sys; subprocess.run(sys.argv[1:])"


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition, limit_s: float) -> float:
    """Seconds until `condition()` held; fails after `limit_s`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < limit_s, f"not within {limit_s} s"
        time.sleep(0.1)
    return time.monotonic() - start


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture
def processes():
    """Processes a test started; whatever is left of them is killed at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def start(processes, argv, **kwargs) -> subprocess.Popen:
    process = subprocess.Popen(argv, **kwargs)
    processes.append(process)
    return process


def test_sigterm_to_the_dashboard_stops_the_mlflow_server(processes, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client_for(uri).search_experiments(max_results=1)  # an existing store to show
    port = free_port()
    dashboard = start(processes, [sys.executable, "-m", "harness.cli", "dashboard",
                                  "--tracking-uri", uri, "--port", str(port)],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    printed: list[str] = []
    threading.Thread(target=lambda: [printed.append(line) for line in dashboard.stdout],
                     daemon=True).start()
    link = f"http://127.0.0.1:{port}/#/experiments"
    # The link is printed once the dashboard itself has seen the server answer, which can
    # be a poll later than this test sees it: the signal waits for the link.
    wait_until(lambda: any(link in line for line in list(printed)), SERVER_START_LIMIT_S)
    assert answers(f"http://127.0.0.1:{port}/health")
    dashboard.send_signal(signal.SIGTERM)
    took = wait_until(lambda: not accepts(port), CLOSED_WITHIN_S)
    assert dashboard.wait(timeout=30) == 0, "a requested stop is not a failure"
    print(f"port closed {took:.1f} s after SIGTERM")


def test_killing_the_process_that_started_the_dashboard_stops_the_server(processes):
    port = free_port()
    launcher = start(processes, [sys.executable, "-c", LAUNCHER, sys.executable, "-c",
                                 SUPERVISED, STAND_IN, LISTENER, str(port)])
    wait_until(lambda: accepts(port), 60)
    launcher.send_signal(signal.SIGTERM)  # tox's fate: it dies, passing nothing on
    assert launcher.wait(timeout=10) == -signal.SIGTERM
    wait_until(lambda: not accepts(port), CLOSED_WITHIN_S)


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_killing_the_dashboard_outright_stops_the_server(processes):
    port = free_port()
    dashboard = start(processes, [sys.executable, "-c", SUPERVISED, STAND_IN, LISTENER,
                                  str(port)])
    wait_until(lambda: accepts(port), 60)
    dashboard.kill()  # SIGKILL: no handler runs; the kernel tells the server
    dashboard.wait(timeout=10)
    wait_until(lambda: not accepts(port), CLOSED_WITHIN_S)


def test_a_port_in_use_or_a_missing_store_is_one_line_and_status_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        Path(tmp_path / "mlflow.db").touch()
        busy = subprocess.run([sys.executable, "-m", "harness.cli", "dashboard",
                               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "--port", str(port)], capture_output=True, text=True,
                              timeout=120)
    assert busy.returncode == 2
    assert busy.stderr.strip() == (f"error: port {port} on 127.0.0.1 is in use (another "
                                   f"dashboard?); pass --port with a free one")
    missing = subprocess.run([sys.executable, "-m", "harness.cli", "dashboard",
                              "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert f"{tmp_path / 'none.db'}" in missing.stderr
    assert not (tmp_path / "none.db").exists()
