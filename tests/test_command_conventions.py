"""The commands agree: `run` and `report` take the suite in the same position and write
to the same default folder, and each mistake is one line naming what the user typed (the
override, the path, the store, the server's reason) rather than a file they never
opened or a sentence cut mid-word."""

from __future__ import annotations

import errno
import re
import tempfile

import pytest

from harness.bench.recording import atomic
from harness.bench.configuration.suite import SuiteError, SUITES_DIR
from harness.bench.configuration.suite_files import recorded_in
from harness.bench.recording.tracking import REASON_CHARS, failure_reason
from harness.cli import build_parser
from tests.bench_support import bench_environment, free_port, harness, write_suite


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path, store=False)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- one positional form -----------------------------------------------------------------

@pytest.mark.parametrize("argv", [[], ["smoke"], ["my-suite.toml"]])
def test_run_and_report_read_the_suite_from_the_same_position(argv):
    parser = build_parser()
    run, report = (parser.parse_args([command, *argv]) for command in ("run", "report"))
    assert run.suite == report.suite == (argv[0] if argv else "default")
    assert run.out == report.out == "runs"


def test_report_names_the_experiment_that_run_records_into(tmp_path):
    assert recorded_in("guided") == ("guided", "")
    suite = write_suite(tmp_path / "mine.toml", 'experiment = "exp1"\n'
                                                'tracking_uri = "sqlite:///elsewhere.db"\n')
    assert recorded_in(str(suite)) == ("exp1", "sqlite:///elsewhere.db")
    assert recorded_in(str(write_suite(tmp_path / "bare.toml", ""))) == ("bare", "")
    assert recorded_in("made-with-experiment") == ("made-with-experiment", "")
    with pytest.raises(SuiteError, match="suite file 'gone.toml' does not exist"):
        recorded_in("gone.toml")


# --- a store that is not there -------------------------------------------------------------

def test_report_on_a_missing_store_is_one_line_and_creates_nothing(bench, tmp_path, capsys):
    assert harness("report", "smoke") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: the MLflow tracking store 'sqlite:///mlflow.db' does not "
                           f"exist (no file {tmp_path}/mlflow.db)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing may be created"


# --- overrides are blamed, not the packaged file -----------------------------------------

@pytest.mark.parametrize("suite, override, problem", [
    ("default", ["--set", "metrics.fid.num_samples=abc"],
     "metrics.fid: unknown option of metric 'fid' 'num_samples'"),
    ("smoke", ["--set", "samplers.heun.params.x=1"],
     "samplers.heun.params: unknown parameter 'x'"),
    ("smoke", ["--num-samples", "0"], "num_samples must be an integer >= 1, got 0"),
    ("smoke", ["--steps", "4,0"], "steps[1] must be an integer >= 1, got 0"),
    ("smoke", ["--set", "frob=1"], "unknown key 'frob'"),
])
def test_a_bad_override_names_the_override_not_the_suite_file(suite, override, problem,
                                                               capsys):
    assert harness("run", suite, *override, "--dry-run") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {' '.join(override)}: {problem}"), line
    assert str(SUITES_DIR) not in line


def test_a_mistake_in_the_suite_file_still_names_the_file(tmp_path, capsys):
    suite = write_suite(tmp_path / "mine.toml", 'model = "gmm-ring-2d"\nnum_samples = 0\n'
                                                '[samplers.euler]\n')
    assert harness("run", suite, "--seeds", "3", "--dry-run") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: suite {suite}: num_samples must be"), line


# --- an output folder that cannot be written -----------------------------------------------

@pytest.mark.parametrize("command", ["run", "report"])
def test_out_under_a_regular_file_names_the_path_and_why(command, bench, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    assert harness(command, "smoke", "--out", tmp_path / "taken" / "x") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == (f"error: the results folder '{tmp_path}/taken/x/smoke' cannot be "
                    f"created: '{tmp_path}/taken' is a file; pass another --out")


@pytest.mark.parametrize("code, reason, advice", [
    (errno.EROFS, "Read-only file system", "pass another --out"),
    (errno.EACCES, "Permission denied", "pass another --out"),
    (errno.ENOSPC, "No space left on device", "free space or pass another --out")])
def test_the_os_reason_decides_the_advice(code, reason, advice, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(code, reason)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(atomic.OutputError) as caught:
        atomic.check_writable(tmp_path / "out")
    assert str(caught.value) == (
        f"the results folder '{tmp_path}/out' is not writable: a file cannot be created in "
        f"'{tmp_path}' ([Errno {code}] {reason}); {advice}; nothing was computed")


# --- an unreachable tracking server --------------------------------------------------------

def test_an_unreachable_server_gives_the_whole_reason(bench, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # closed: nothing listens there
    assert harness("run", "smoke", "--quiet", "--tracking-uri", uri) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert re.search(rf"store '{uri}' is not reachable \(MlflowException: \[Errno \d+\] "
                     rf"Connection refused\)\. Start the server", line), line


def test_a_long_reason_is_cut_between_words():
    # 8-character words: a cut at REASON_CHARS = 300 characters falls inside one.
    reason = failure_reason(RuntimeError("refused " * 100 + "\nsecond line"))
    assert reason.endswith(" ...") and len(reason) <= REASON_CHARS + 4
    assert set(reason[:-4].split(" ")) == {"refused"}
