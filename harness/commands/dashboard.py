"""``harness dashboard``: the MLflow UI of a tracking store, and the links to open in it.

`mlflow ui` runs a server process (uvicorn) under its own; a launcher that only starts it
(tox, a shell script) and is then stopped by its PID leaves the server listening, since
nothing passes the signal on. Here the server gets a process group of its own, and the
whole group is stopped when this command is: by Ctrl-C, SIGTERM or SIGHUP, or when the
process that started this one goes away (`tox -e dashboard` killed by its PID: tox does
not pass SIGTERM on). On Linux the server is also told to stop if this process is killed
outright (SIGKILL), through the kernel's parent-death signal.

Once the server answers, the command prints, for every experiment the harness recorded,
the link that opens its trials sorted by FID in MLflow's model-training view (MLflow 3
otherwise opens an experiment on its GenAI overview).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Callable, Optional, Sequence

from ..bench.recording.mlflow_view import TRIALS_VIEW_TAG, experiment_link
from ..bench.recording.tracking import absolute_uri, resolve_tracking_uri, sqlite_path

DEFAULT_PORT = 5000
#: Seconds the server's process group gets to stop on SIGTERM before it is killed.
STOP_GRACE_S = 10.0
#: How often the command looks at the server, its own parent and the signals received.
POLL_S = 0.2
#: Signals that stop the dashboard (SIGHUP: the terminal it ran in was closed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard", help="the MLflow UI of the tracking store, on 127.0.0.1",
        description="Serve the MLflow UI of the tracking store (`mlflow ui`) and print, for "
                    "each experiment the harness recorded, the link to its trials sorted "
                    "by FID. Ctrl-C, SIGTERM or the end of the process that started it "
                    "stop the server and every process it started.")
    parser.add_argument("--tracking-uri",
                        help="the store to show (default: $MLFLOW_TRACKING_URI, else "
                             "sqlite:///mlflow.db)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the interface to listen on (default: 127.0.0.1, this machine "
                             "only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"the port to listen on (default: {DEFAULT_PORT})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"error: {uri} is a tracking server: its dashboard is that address; open it "
              f"in a browser", file=sys.stderr)
        return 2
    path = sqlite_path(uri)
    if path is not None and not os.path.isfile(path):
        print(f"error: the MLflow store {uri!r} does not exist (no file {path}); run "
              f"`harness run` in this folder first, or pass --tracking-uri", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port must be between 1 and 65535, got {args.port}", file=sys.stderr)
        return 2
    if not port_is_free(args.host, args.port):
        print(f"error: port {args.port} on {args.host} is in use (another dashboard?); pass "
              f"--port with a free one", file=sys.stderr)
        return 2
    base = f"http://{args.host}:{args.port}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", absolute_uri(uri),
               "--host", args.host, "--port", str(args.port), "--workers", "1"]
    print(f"starting the MLflow UI of {uri} on {base} (Ctrl-C stops it)", file=sys.stderr)
    # MLflow's job runner serves GenAI evaluation jobs, which a benchmark store has none
    # of; without it the server starts sooner and is one process fewer.
    environment = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    return supervise(command, on_ready=(f"{base}/health", lambda: print_links(base)),
                     environment=environment)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def print_links(base: str) -> None:
    """One line per experiment the harness recorded: where its comparison opens."""
    try:
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/search?"
                                    f"max_results=1000", timeout=10) as answer:
            experiments = json.load(answer).get("experiments", [])
    except (OSError, ValueError) as err:
        print(f"dashboard: {base} (the experiments could not be listed: {err})")
        return
    ours = [e for e in experiments
            if any(t.get("key") == TRIALS_VIEW_TAG for t in e.get("tags", []))]
    if not ours:
        print(f"dashboard: {base}/#/experiments?workflowType=machine_learning (no "
              f"experiment has the view Trials by FID yet: `harness run` adds it)")
    for experiment in ours:
        print(f"dashboard of {experiment['name']!r}: "
              f"{base}/{experiment_link(experiment['experiment_id'])}")
    sys.stdout.flush()


def _die_with_parent() -> None:
    """In the server's process, before it starts: Linux sends it SIGTERM when this
    command's process ends, however it ends."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        pass  # not Linux: the polling in `supervise` still covers every handled exit


def supervise(command: Sequence[str],
              on_ready: Optional[tuple[str, Callable[[], None]]] = None,
              environment: Optional[dict[str, str]] = None) -> int:
    """Run `command` in a process group of its own until it exits or this process is
    asked to stop (a signal in `STOP_SIGNALS`, or its parent gone); then stop the whole
    group. `on_ready` = (url, callback): the callback runs once the url answers.
    Returns the server's exit status, or 0 when it was stopped on request."""
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in STOP_SIGNALS}
    parent = os.getppid()
    server = subprocess.Popen(list(command), env=environment, start_new_session=True,
                              preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        while not received and os.getppid() == parent:
            code = server.poll()
            if code is not None:
                if code:
                    print(f"error: the MLflow UI stopped with status {code}", file=sys.stderr)
                return code
            if on_ready is not None and _answers(on_ready[0]):
                on_ready[1]()
                on_ready = None
            time.sleep(POLL_S)
        return 0
    finally:
        stop_group(server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except (OSError, ValueError):
        return False


def stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, then SIGKILL to what is left of it after
    `STOP_GRACE_S`; returns once the server process has ended."""
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break  # the group is empty
        try:
            server.wait(timeout=wait_s)
            if _group_empty(server.pid, STOP_GRACE_S):
                break
        except subprocess.TimeoutExpired:
            continue


def _group_empty(group: int, within_s: float) -> bool:
    """Whether every process of the group has ended within `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(POLL_S)
    return False
