"""No command writes the committed results/ unless told to with `--out results`, and what
the commands write by default (runs/, the MLflow store, its lock and artefacts) is
ignored by git: run from the root of a copy of the repository, `git status` stays clean.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.bench_support import bench_environment, harness

ROOT = Path(__file__).resolve().parents[1]
#: The smallest useful run of the packaged smoke suite: seconds, no metric.
SMALL = ["--nfe", "4", "--num-samples", "16", "--batch-size", "16", "--set", "metrics={}",
         "--quiet"]


def _git(folder: Path, *argv: str) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost",
                           *argv], cwd=folder, check=True, capture_output=True,
                          text=True).stdout


def _committed_tree_copy(target: Path) -> Path:
    """The repository's tracked files (as in the working tree) copied into `target`,
    committed to a fresh git repository there."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    for name in _git(ROOT, "ls-files", "-z").split("\0"):
        source = ROOT / name
        if name and source.is_file():  # a file deleted but not yet unstaged is left out
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    _git(target, "init", "-q")
    _git(target, "add", "-A")
    _git(target, "commit", "-q", "-m", "the committed tree")
    return target


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def repository(monkeypatch, tmp_path):
    """cwd = a committed copy of the repository (as from its root), with an empty store."""
    root = _committed_tree_copy(tmp_path / "repository")
    for _ in bench_environment(monkeypatch, root):
        yield root


def test_commands_leave_results_alone_and_git_status_clean(repository):
    committed = _digest(repository / "results")
    assert harness("run", "smoke", *SMALL) == 0
    assert harness("report", "smoke") == 0
    assert harness("report") == 2  # no default experiment in this store: an error, no file
    assert _digest(repository / "results") == committed
    assert (repository / "runs" / "smoke" / "leaderboard.md").is_file()
    assert {"mlflow.db", "mlflow.db.lock", "runs"} <= {p.name for p in repository.iterdir()}
    # Everything written is ignored: no untracked or modified file for git.
    assert _git(repository, "status", "--porcelain", "--untracked-files=all") == ""


def test_out_results_writes_the_committed_folder(repository):
    assert harness("run", "smoke", *SMALL, "--out", "results") == 0
    assert harness("report", "smoke", "--out", "results") == 0
    status = _git(repository, "status", "--porcelain", "--untracked-files=all")
    assert "?? results/smoke/leaderboard.md" in status.splitlines()
    assert not (repository / "runs").exists()
