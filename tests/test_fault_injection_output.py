"""Fault injection, the outputs and ordinary mistakes: a results path that names a file
or cannot be created, a disk that fills mid-suite, a suite file that is not UTF-8, a
model option of the wrong type, a suite too large for memory, a damaged checkpoint and a
corrupt FID cache. Each is one line (exit 2) before any compute, or, once trials are
measured, a warning that loses none of them.
"""

from __future__ import annotations

import json
import re
import resource
import signal

import pytest
import torch

from harness.bench import exit_codes
from harness.bench.running.guards import MemoryGuardError, plan_memory
from harness.bench.recording.report_folder import LOCK_NAME
from harness.metrics import fid
from harness.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from harness.models.oracle import ring_2d
from harness.core.sde import make_sde
from tests.bench_support import (
    TINY_SUITE,
    bench_environment,
    harness,
    shared_server,
    trial_runs,
    write_suite,
)
from tests.fault_support import FAULT_SUITE, cli_env, fault_plugins, records, run_cli


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _nothing_ran(experiment: str = "tiny") -> bool:
    from tests.bench_support import client_for

    return client_for("sqlite:///mlflow.db").get_experiment_by_name(experiment) is None


def test_out_naming_a_file_is_refused_before_any_compute(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    (tmp_path / "taken").write_text("a file, not a folder")
    assert harness("run", suite, "--quiet", "--out", tmp_path / "taken") == exit_codes.USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert line == (f"error: the results folder '{tmp_path}/taken/tiny' cannot be created: "
                    f"'{tmp_path}/taken' is a file; pass another --out")
    assert _nothing_ran()


def test_a_results_path_that_cannot_be_created_is_refused(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    assert harness("run", suite, "--quiet", "--out", "/proc/harness-results"
                   ) == exit_codes.USAGE
    line = _one_error_line(capsys.readouterr().err)
    # The OS's reason (ENOENT as root, EACCES otherwise) for the folder it tried, and no
    # advice to free space on /proc.
    assert re.fullmatch(r"error: the results folder '/proc/harness-results/tiny' is not "
                        r"writable: a file cannot be created in '/proc' \(\[Errno \d+\] "
                        r"(No such file or directory|Permission denied)\); pass another "
                        r"--out; nothing was computed", line), line
    assert _nothing_ran()


def _disk_full_at(limit: int):
    """For a subprocess: files cannot grow past `limit` bytes (EFBIG), as on a full disk;
    SIGXFSZ ignored so that the write fails instead of killing the process."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_that_fills_mid_suite_loses_no_measured_trial(tmp_path):
    server = shared_server()
    fault_plugins(tmp_path / "site")
    suite = tmp_path / "full.toml"
    suite.write_text(FAULT_SUITE.format(experiment="full-disk", sampler="euler"))
    # The pre-flight probe (4096 bytes) fits; sample grids (~10 kB) never do, and
    # trials.jsonl fills up after a few records.
    code, out, err = run_cli(["run", str(suite), "--quiet", "--tracking-uri", server.uri],
                             tmp_path, cli_env(tmp_path / "site"), _disk_full_at(4608))
    assert code == exit_codes.RECORDING_INCOMPLETE, err
    assert "3 trials finished, 0 failed" in out
    assert "sample grid not written to" in err
    assert "trials.jsonl stopped recording" in err
    # No torn line, no empty or temporary file left behind.
    folder = tmp_path / "runs" / "full-disk"
    lines = records(folder / "trials.jsonl")  # each line parses
    assert all(r["status"] == "FINISHED" for r in lines if r["kind"] == "trial")
    left = [p for p in folder.rglob("*") if p.is_file() and p.name != LOCK_NAME]
    assert all(p.stat().st_size > 0 and not p.name.startswith(".") for p in left), left
    # The tracking server has every trial, FINISHED, once, with the warning.
    runs = trial_runs(server.uri, "full-disk")
    assert sorted(r.info.run_name for r in runs) == [
        f"euler-{n}nfe-seed0" for n in (2, 3, 4)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("sample grid not written" in r.data.tags["warnings"] for r in runs)


def test_a_suite_file_that_is_not_utf8_is_one_line(bench, tmp_path, capsys):
    suite = tmp_path / "latin1.toml"
    suite.write_bytes(TINY_SUITE.replace('"tiny"', '"caf\xe9"').encode("latin-1"))
    assert harness("run", suite, "--quiet") == exit_codes.USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert line == (f"error: suite file '{suite}' is not UTF-8 text (byte b'\\xe9' at offset "
                    f"{TINY_SUITE.index('tiny') + 3}); save it as UTF-8")


def test_a_model_option_of_the_wrong_type_is_one_line(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    assert harness("run", suite, "--quiet", "--set", "model_options.sde=5") == exit_codes.USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: model 'gmm-ring-2d' cannot be built with model_options "
                           "sde = 5: ")
    assert _nothing_ran()


def test_samples_that_cannot_be_held_are_refused_before_allocation(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    # Absurd sizes stop at validation, with the cap and its reason.
    assert harness("run", suite, "--quiet", "--num-samples", "1000000000000"
                   ) == exit_codes.USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert "num_samples must be an integer <= 10000000" in line
    assert _nothing_ran()
    # Sizes under the cap that the machine cannot hold stop at the memory guard: 10^7
    # samples x 2 float32 values x 3 copies, against 100 MB said to be available.
    with pytest.raises(MemoryGuardError) as refused:
        plan_memory(ring_2d(make_sde("vp")).float(), torch.float32, 10**7, 1000,
                    torch.device("cpu"), available={"cpu": 1e8})
    assert f"needs about {3 * 8e7 / 2**20:,.1f} MiB of CPU memory" in str(refused.value)
    assert str(refused.value).endswith("lower num_samples (nothing was allocated)")


def test_a_batch_too_large_for_memory_is_split_to_what_fits():
    model = ring_2d(make_sde("vp")).float()
    # 80% of what is available leaves 64 KiB besides the 1000 samples held (24 kB).
    available = {"cpu": (2**16 + 1000 * 8 * 3) / 0.8}
    plan = plan_memory(model, torch.float32, 1000, 1000, torch.device("cpu"),
                       available=available)
    assert plan.batch_size == int(2**16 // plan.bytes_per_batch_sample) < 1000
    assert plan.bytes_per_batch_sample >= 8 * 6  # at least the sampler's own tensors
    assert plan.note.startswith("batch_size = 1,000 would need about")
    assert plan.note.endswith(f"using batch_size = {plan.batch_size:,} (batches change "
                              f"memory, not results)")
    with pytest.raises(MemoryGuardError, match="one sample needs about"):
        plan_memory(model, torch.float32, 1000, 1000, torch.device("cpu"),
                    available={"cpu": 1000 * 8 * 3 / 0.8 + 10})


def test_a_damaged_checkpoint_whose_checksum_matches_is_one_line(tmp_path):
    save_checkpoint(tmp_path / "net", {"w": torch.ones(4)})
    weights, manifest = tmp_path / "net.safetensors", tmp_path / "net.json"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])  # header length ruined
    import hashlib

    record = json.loads(manifest.read_text())
    record["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(record))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "net")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {weights} is damaged: its sha256 matches net.json "
                              f"but it is not a readable safetensors file (")


class _Features(torch.nn.Module):
    sha256 = "identity-features"

    def forward(self, x):
        return x.double()


def test_a_corrupt_fid_cache_is_recomputed_with_a_warning(tmp_path):
    data = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    calls = []

    def images():
        calls.append(1)
        return data

    path = fid.cache_path("data:x", _Features.sha256, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file at all")
    with pytest.warns(RuntimeWarning, match="FID reference cache .* is unreadable .* "
                                            "recomputing it"):
        first = fid.reference_stats("data:x", images, _Features(), cache_dir=tmp_path)
    assert calls == [1]
    torch.testing.assert_close(first.features_sum, data.double().sum(0))
    second = fid.reference_stats("data:x", images, _Features(), cache_dir=tmp_path)
    assert calls == [1]  # the rewritten cache is read
    torch.testing.assert_close(second.features_cov_sum, first.features_cov_sum)


def test_a_guided_suite_plans_for_the_doubled_network_batch():
    from harness.bench.running.guards import LIVE_STATES, activation_bytes_per_sample

    model = ring_2d(make_sde("vp")).float()
    state = 2 * 4  # one 2-D float32 sample
    plain = plan_memory(model, torch.float32, 1000, 1000, torch.device("cpu"),
                        available={"cpu": 1e9})
    guided = plan_memory(model, torch.float32, 1000, 1000, torch.device("cpu"),
                         available={"cpu": 1e9}, guided=True)
    network = activation_bytes_per_sample(model, torch.float32)
    assert plain.bytes_per_batch_sample == state * LIVE_STATES + network
    # The doubled batch: the network's activations twice, and its concatenated input.
    assert guided.bytes_per_batch_sample == state * LIVE_STATES + 2 * (network + state)
