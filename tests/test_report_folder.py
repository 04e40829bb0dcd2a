"""Records land where they are told: inside --out, and from one run at a time."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.bench.recording.report_folder import report_folder
from harness.bench.configuration.suite_schema import SuiteError
from tests.bench_support import TINY_SUITE, bench_environment, harness, write_suite

#: Holds a report folder as a running `harness run` does, until killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.bench.recording.report_folder import held
    with held(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", ["../../escaped", "..", "a/../../escaped", "/tmp/escaped",
                                  "a\\..\\..\\escaped", " "])
def test_an_experiment_name_that_leaves_out_is_refused_before_anything_is_written(
        bench, tmp_path, capsys, name):
    inside = tmp_path / "deep" / "inside"
    inside.mkdir(parents=True)
    suite = write_suite(inside / "tiny.toml", TINY_SUITE)
    before = files_under(tmp_path)
    code = harness("run", suite, "--quiet", "--out", inside / "out", "--experiment", name)
    assert code == 2
    err = capsys.readouterr().err
    assert f"experiment name {name!r} cannot name a folder inside --out" in err
    assert files_under(tmp_path) == before  # no store, no record, no report anywhere
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()
    assert harness("report", "--out", inside / "out", "--experiment", name) == 2


def test_a_workspace_path_names_subfolders_of_out(tmp_path):
    assert report_folder(tmp_path, "team/sampler-study") == tmp_path / "team" / \
        "sampler-study"
    assert report_folder(tmp_path, "a..b") == tmp_path / "a..b"  # dots inside a name
    with pytest.raises(SuiteError):
        report_folder(tmp_path, "team/../..")


def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(bench, tmp_path,
                                                                      capsys):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    folder = tmp_path / "runs" / "tiny"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert harness("run", suite, "--quiet") == 2
        err = capsys.readouterr().err
        assert f"another harness run is writing into runs/tiny (PID {holder.pid}, " in err
        assert not (folder / "trials.jsonl").exists()  # refused before any record
    finally:
        holder.send_signal(signal.SIGKILL)  # a holder killed outright frees the folder
        holder.wait(timeout=30)
    assert harness("run", suite, "--quiet") == 0
    assert (folder / "leaderboard.md").is_file()
    assert harness("run", suite, "--quiet") == 0  # a finished run frees it too


def test_two_runs_started_together_into_one_folder_end_in_a_refusal_of_one(bench, tmp_path):
    # Two suites of one experiment, started at once in fresh processes (which have the
    # installed plugins only: msn is a test plugin); each runs for several seconds past
    # the point where it takes the folder, so they overlap. Unrefused, both would exit 0
    # and the report would hold the last finisher's sampler only.
    tiny = TINY_SUITE.replace("[metrics.msn]", "").replace("seeds = [0]",
                                                           f"seeds = {list(range(6))}")
    suites = [write_suite(tmp_path / f"{name}.toml", tiny.replace(f"[samplers.{other}]", ""))
              for name, other in (("only-euler", "heun"), ("only-heun", "euler"))]
    runs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite),
                              "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for suite in suites]
    outcomes = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    (refusal,) = [err for code, err in outcomes if code == 2]
    assert "another harness run is writing into runs/tiny (PID " in refusal
    (winner,) = [suite.stem for suite, (code, _) in zip(suites, outcomes) if code == 0]
    board = (tmp_path / "runs" / "tiny" / "leaderboard.md").read_text()
    assert ("heun" in board) == (winner == "only-heun")
    assert ("euler" in board) == (winner == "only-euler")
