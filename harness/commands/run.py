"""``harness run``: run a benchmark suite and log it to MLflow and to runs/ (`--out`).

Exit statuses: `harness.bench.exit_codes` (0 done, 1 failed trials, 2 usage, 3 finished
but not everything recorded, 130/143 interrupted).

Also under torchrun (`torchrun --nproc_per_node=N -m harness.cli run ...`): every process
loads the model and runs every trial on its share of the samples; rank 0 alone talks to
MLflow, writes the report and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from ..bench import exit_codes
from ..bench.recording.atomic import check_writable, write_text
from ..bench.running.plan import resolve_plan
from ..bench.running.plan_text import format_plan
from ..bench.recording.report_folder import held, report_folder
from ..bench.running.runner import load_model, run_plan, summary
from ..bench.recording.sinks import SinkContext, Sinks, describe, finished_hashes, make_sinks
from ..bench.reporting.publish import publish_report
from ..bench.configuration.suite import Suite, SuiteError, load_suite, parse_list
from ..bench.recording.sample_images import check_image_data
from ..bench.recording.tracking import (
    DEFAULT_TRACKING_URI,
    connect,
    finished_config_hashes,
    resolve_tracking_uri,
)
from ..core import distributed
from ..plugin.manager import LoadedPlugins, failure_lines, get_plugins
from .options import add_out_option, add_suite_argument


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="run a benchmark suite (default: the packaged default suite)",
        description="Run every trial (sampler x hyperparameters x steps x seed) of a suite, "
                    "log it to MLflow (one parent run, one nested run per trial) and to "
                    "OUT/<experiment>/ (default: runs/), then print the leaderboard.")
    add_suite_argument(parser, "a packaged suite name (default, guided, fast, fast_oracle, "
                               "smoke) or a TOML file")
    over = parser.add_argument_group("overrides of suite fields")
    over.add_argument("--samplers", help="comma-separated samplers to run (others dropped)")
    over.add_argument("--steps", help="comma-separated step counts for every sampler")
    over.add_argument("--nfe", help="comma-separated NFE budgets for every sampler")
    over.add_argument("--seeds", help="comma-separated seeds")
    over.add_argument("--guidance", help="comma-separated classifier-free guidance scales "
                      "w for every sampler (a class-conditional model only; 1: "
                      "conditional, 0: unconditional)")
    over.add_argument("--num-samples", type=int, help="samples per trial")
    over.add_argument("--batch-size", type=int, help="samples per batch (memory, not results)")
    over.add_argument("--metrics", help="comma-separated metrics to compute")
    over.add_argument("--model", help="registered model name")
    over.add_argument("--schedule", help="comma-separated time schedules, one trial per "
                      "schedule (`harness plugins` lists them; parameters: --set)")
    over.add_argument("--device", help="auto (CUDA when present), cpu, cuda or cuda:N")
    over.add_argument("--dtype", help="the sampler's state: float32 or float64")
    over.add_argument("--network-dtype", help="the network's precision: native (as loaded, "
                      "in --dtype), fp32, bf16 or fp16 (autocast; the state keeps --dtype)")
    over.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                      help="run the network through torch.compile (or not)")
    over.add_argument("--capture", help="the sampler loop: off, or compiled (each sampler "
                      "call compiled whole per batch shape, CUDA graphs on a GPU; one that "
                      "cannot be runs eagerly, saying why)")
    over.add_argument("--threads", type=int,
                      help="torch threads per process (default: the suite's, else "
                           "$OMP_NUM_THREADS, else 1, which degrades least when other "
                           "processes compete for the cores); logged, not hashed")
    over.add_argument("--trial-time-limit", type=float, metavar="SECONDS",
                      help="a trial taking longer (sampling and metrics) is FAILED and the "
                           "suite goes on; not hashed")
    over.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                      help="streamed trials: samples go batch by batch through the decoder "
                           "and the feature extractors; only the sample grid's and what "
                           "metrics read of the raw samples are held (the same numbers; "
                           "not hashed)")
    over.add_argument("--experiment", help="MLflow experiment name")
    over.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="any other field, dotted for tables, value as TOML "
                           "(e.g. samplers.langevin.params.S_churn=[0,10])")
    parser.add_argument("--tracking-uri",
                        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the "
                             f"suite's, else {DEFAULT_TRACKING_URI})")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved configuration and trials, each with the "
                             "sigma grid its sampler will see; compute nothing")
    parser.add_argument("--json", action="store_true",
                        help="with --dry-run: print the plan as JSON, every trial's whole "
                             "grid included")
    parser.add_argument("--resume", action="store_true",
                        help="skip trials whose config hash has a FINISHED run already")
    add_out_option(parser)
    parser.add_argument("--save-samples", type=Path, metavar="DIR",
                        help="also write every sample of every trial as a PNG file, as EDM "
                             "does (DIR/<trial>/<thousands>/<index>.png), after the trial "
                             "is measured; image models only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line overrides, in the form `suite.apply_overrides` takes."""
    def listed(option: str, value: Optional[str], kind: type = str) -> Optional[list]:
        return None if value is None else parse_list(option, value, kind)

    return {
        "samplers": listed("--samplers", args.samplers),
        "metrics": listed("--metrics", args.metrics),
        "steps": listed("--steps", args.steps, int),
        "nfe": listed("--nfe", args.nfe, int),
        "seeds": listed("--seeds", args.seeds, int),
        "guidance": listed("--guidance", args.guidance, float),
        "num_samples": args.num_samples, "batch_size": args.batch_size,
        "model": args.model, "schedule": listed("--schedule", args.schedule),
        "device": args.device,
        "dtype": args.dtype, "network_dtype": args.network_dtype, "compile": args.compile,
        "capture": args.capture, "stream": args.stream,
        "threads": args.threads, "trial_time_limit": args.trial_time_limit,
        "experiment": args.experiment, "set": args.set,
    }


def run(args: argparse.Namespace, plugins: Optional[LoadedPlugins] = None) -> int:
    plugins = plugins or get_plugins()
    for line in failure_lines(plugins):
        distributed.print0(line, file=sys.stderr)
    suite = load_suite(args.suite, plugins, overrides_from_args(args))
    # Before the model loads, so that loading runs at the setting too; restored after,
    # for callers that run suites in their own process.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(suite.threads)
    try:
        return _run(args, plugins, suite)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace, plugins: LoadedPlugins, suite: Suite) -> int:
    if args.json and not args.dry_run:
        raise SuiteError("--json goes with --dry-run (a run's records are JSON already: "
                         "trials.jsonl)")
    out_dir = report_folder(Path(args.out), suite.experiment)  # a name leaving --out
    if args.dry_run:
        # The plan on the CPU: the run's own device may be absent here, and the memory
        # guard's answer depends on it (a run prints the batch size it chose).
        cpu = distributed.resolve_device("cpu")
        plan = resolve_plan(suite, plugins, load_model(suite, plugins, cpu), cpu,
                            finished=lambda: finished_hashes(out_dir / "trials.jsonl")
                            if args.resume else set(), guard_memory=False)
        print(json.dumps(plan.to_json(), indent=1) if args.json else format_plan(plan))
        return 0
    device = distributed.resolve_device(suite.device)
    created = distributed.init(backend="nccl" if device.type == "cuda" else "gloo")
    clean = False
    try:
        with contextlib.ExitStack() as holding:  # the report folder, once taken
            status = _run_suite(args, plugins, suite, device, out_dir, holding)
        clean = True
        return status
    finally:
        if created:
            distributed.shutdown(clean)


def _run_suite(args: argparse.Namespace, plugins: LoadedPlugins, suite: Suite,
               device: torch.device, out_dir: Path, holding: contextlib.ExitStack) -> int:
    lead = distributed.rank() == 0
    uri = resolve_tracking_uri(args.tracking_uri, suite.tracking_uri)
    distributed.on_rank0(lambda: check_writable(out_dir))  # before any compute
    client = None

    def connect_tracking() -> None:  # rank 0's; a refusal stops every process
        nonlocal client
        client = connect(uri)  # fails here, before the model is even loaded

    def finished() -> set[str]:
        # MLflow's record and the local one: a trial finished while the tracking server
        # was down is only in trials.jsonl, and must not run again.
        return distributed.on_rank0(
            lambda: finished_config_hashes(client, suite.experiment)
            | finished_hashes(out_dir / "trials.jsonl"))

    distributed.on_rank0(connect_tracking)
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device,
                        finished=finished if args.resume else set)
    if args.save_samples is not None:
        check_image_data(plan.model.output_spec, suite.model)
    if plan.memory_note:
        distributed.print0(f"note: {plan.memory_note}", file=sys.stderr)
    # Taken once nothing can refuse the run any more (a refused run leaves no folder),
    # before the first record is written: a second run into it is refused. The plan is
    # kept beside the records (what ran, as the dry run prints it).
    distributed.on_rank0(lambda: holding.enter_context(held(out_dir)))
    distributed.on_rank0(lambda: write_text(out_dir / "plan.json",
                                            json.dumps(plan.to_json(), indent=1)))
    suite = plan.suite
    sinks = (make_sinks(plugins, SinkContext(out_dir=out_dir, suite=suite,
                                             experiment=suite.experiment,
                                             tracking_uri=uri, client=client))
             if lead else Sinks([]))
    processes = (f" x {distributed.world_size()} processes"
                 if distributed.world_size() > 1 else "")
    distributed.print0(f"suite {suite.name}: {len(plan.entries)} trials on {suite.model} "
                       f"({device}{processes}), {len(plan.skipped)} skipped; tracking {uri}, "
                       f"experiment {suite.experiment!r}", file=sys.stderr)
    results = run_plan(plan, sinks, artifacts_dir=out_dir / "samples" if lead else None,
                       quiet=args.quiet,
                       # Streamed, each process writes its own share as it draws it.
                       samples_dir=args.save_samples if lead or suite.stream else None)
    if not lead:
        # torchrun stops every process as soon as one exits non-zero, which would cut
        # rank 0's report short; rank 0's exit status is the run's.
        return 0

    report = publish_report(out_dir, {t.config_hash for t in (*plan.skipped, *plan.trials)},
                            suite.experiment, suite.rank_across_schedules)
    if report is not None:
        sinks.report_written(report.files, report.series)
        print(report.files["leaderboard.md"].read_text())
    print(summary(results, len(plan.skipped)))
    for sink, error in sinks.dropped:
        missing = sinks.unrecorded(sink, results)
        kept = " and ".join(describe(s) for s in sinks.active) or "no record: rerun the suite"
        print(f"warning: {describe(sink)} stopped mid-suite ({error}); not recorded there: "
              f"{', '.join(missing) or 'no trial (the suite record only)'}; every trial is "
              f"in {kept}", file=sys.stderr)
    print(f"results: {out_dir}/ (leaderboard.md, plots, samples/, trials.jsonl)")
    if uri.startswith("sqlite:"):
        print(f"dashboard: harness dashboard --tracking-uri {uri} (or tox -e dashboard in "
              f"the repository)")
    else:
        print(f"dashboard: {uri}")
    return exit_codes.suite_exit_code(
        any(r.status != "FINISHED" for r in results),
        recording_complete=(not sinks.dropped and report is not None
                            and not any(r.unrecorded for r in results)))
