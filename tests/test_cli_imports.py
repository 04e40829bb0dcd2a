"""The quick commands stay quick: they do not import pandas, matplotlib or MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("pandas", "matplotlib", "mlflow")
QUICK = [["--help"], ["plugins"], ["run", "--help"], ["run", "default", "--dry-run"],
         ["report", "--help"]]

# Runs the commands one after the other in a fresh interpreter and reports, after each,
# the heavy modules imported so far (the first command to import one is the culprit).
PROBE = """
import contextlib, io, json, sys
from harness.cli import main
report = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    report.append({"argv": argv, "code": code,
                   "loaded": [m for m in %r if m in sys.modules]})
print(json.dumps(report))
""" % (HEAVY,)


def _imported_by(commands: list[list[str]], before: str = "") -> list[dict]:
    probe = PROBE.replace("report = []", before + "\nreport = []")
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(commands)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_quick_commands_import_no_pandas_matplotlib_or_mlflow():
    for result in _imported_by(QUICK):
        assert result["code"] in (0, None), result
        assert result["loaded"] == [], result


def test_the_probe_sees_an_import():
    # The check above must be able to fail: the report module loads pandas and matplotlib.
    [result] = _imported_by([["--help"]], before="import harness.bench.reporting.report")
    assert result["loaded"] == ["pandas", "matplotlib"]
