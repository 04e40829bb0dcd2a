"""Shared pieces of the benchmark tests: plugins with deliberate failures installed as the
process's plugins, `harness` run in-process, suites written to tmp, and real MLflow
stores: an embedded SQLite file per test, and one `mlflow server` shared by the tests
of a session (started on first use, restarted if a test stopped it, stopped at exit).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

from harness.plugin import manager as plugin_manager
from harness.cli import main
from tests.plugins import bench_plugins

SERVER_START_LIMIT_S = 150  # generous: the machine is shared; normally it takes ~10 s

TINY_SUITE = """
experiment = "tiny"
model = "gmm-ring-2d"
schedule = "karras"
steps = [3, 6]
seeds = [0]
num_samples = 32
batch_size = 32
device = "cpu"

[samplers.euler]
[samplers.heun]

[metrics.msn]
"""


def bench_environment(monkeypatch, tmp_path, store: bool = True
                      ) -> Iterator[plugin_manager.LoadedPlugins]:
    """For a `bench` fixture: the installed plugins plus the test plugins as this
    process's plugins, and cwd = tmp_path (so mlflow.db and results/ land there).

    With `store`, tmp_path/mlflow.db starts as a copy of an empty, already initialised
    MLflow database: creating one runs MLflow's migrations, seconds each time.
    """
    loaded = plugin_manager.load_plugins(extra=[("bench_plugins", bench_plugins)])
    assert not loaded.failures, loaded.failures
    monkeypatch.setattr(plugin_manager, "_default", loaded)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if store:
        shutil.copyfile(_template_store(), tmp_path / "mlflow.db")
    bench_plugins.TRIPWIRE.disarm()
    yield loaded
    bench_plugins.TRIPWIRE.disarm()


_TEMPLATE: Optional[Path] = None


def _template_store() -> Path:
    global _TEMPLATE
    if _TEMPLATE is None:
        folder = Path(tempfile.mkdtemp(prefix="bench-store-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        client_for(f"sqlite:///{folder / 'mlflow.db'}").search_experiments(max_results=1)
        _TEMPLATE = folder / "mlflow.db"
    return _TEMPLATE


def harness(*argv: str) -> int:
    """`harness ARGV...` in this process; returns the exit status."""
    return main([str(a) for a in argv])


def tripwire_suite(experiment: str) -> str:
    """A tiny suite of the tripwire sampler: 2 step budgets x 2 seeds on the 2-D oracle."""
    return f"""
experiment = "{experiment}"
model = "gmm-ring-2d"
steps = [2, 3]
seeds = [0, 1]
num_samples = 16
batch_size = 16
device = "cpu"

[samplers.tripwire_euler]
"""


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def client_for(uri: str):
    """An MlflowClient; relative SQLite URIs resolved against the current directory."""
    from mlflow.tracking import MlflowClient

    from harness.bench.recording.tracking import absolute_uri

    return MlflowClient(absolute_uri(uri))


def trial_runs(uri: str, experiment: str) -> list:
    """Every trial run of the experiment."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'trial'",
                              max_results=1000)


def suite_runs(uri: str, experiment: str) -> list:
    """Every suite (parent) run of the experiment."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'suite'",
                              max_results=1000)


# --- a real tracking server ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerHandle:
    """A `mlflow server` on 127.0.0.1 with a SQLite store and an artifacts folder under
    `root`, in its own process group so that stopping it stops its workers too."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "mlflow-server.log", "ab")
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        command = [str(Path(sys.executable).parent / "mlflow"), "server",
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                   "--artifacts-destination", str(root / "server-artifacts")]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_LIMIT_S
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}; "
                                   f"see {self.root / 'mlflow-server.log'}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"mlflow server at {self.uri} not healthy after "
                           f"{SERVER_START_LIMIT_S} s")

    def stop(self) -> None:
        """Stop the server and its workers: the process group this test session started."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


_SERVER: Optional[ServerHandle] = None


def shared_server() -> ServerHandle:
    """The session's running server, started (again) if there is none."""
    global _SERVER
    if _SERVER is None or not _SERVER.alive:
        root = Path(tempfile.mkdtemp(prefix="bench-mlflow-server-"))
        # atexit runs last-registered first: stop the server, then remove its folder.
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SERVER = ServerHandle(root)
        atexit.register(_SERVER.stop)
        _SERVER.wait_healthy()
    return _SERVER
