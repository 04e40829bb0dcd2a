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
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..core import distributed
from ..plugin.manager import LoadedPlugins, failure_lines, get_plugins
from ..bench import exit_codes
from ..bench.atomic import check_writable, publish_folder
from ..bench.guards import plan_memory
from ..models.precision import STATE_DTYPES
from ..bench.environment import environment
from ..bench.floor import floor_trials
from ..bench.report_folder import held, report_folder
from ..bench.runner import SuiteRunner, load_model, summary
from ..bench.sinks import LocalSink, Sinks, SuiteInfo, finished_hashes, strict_json
from ..bench.suite import (
    Suite,
    SuiteError,
    Trial,
    check_conditional,
    flatten,
    load_suite,
    model_identity,
    parse_list,
    resolve_trials,
    short_value,
)
from ..bench.tracking import (
    DEFAULT_TRACKING_URI,
    MLflowSink,
    connect,
    finished_config_hashes,
    resolve_tracking_uri,
)
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
    over.add_argument("--threads", type=int,
                      help="torch threads per process (default: the suite's, else "
                           "$OMP_NUM_THREADS, else 1, which degrades least when other "
                           "processes compete for the cores); logged, not hashed")
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
        "threads": args.threads, "experiment": args.experiment, "set": args.set,
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
        model = load_model(suite, plugins, distributed.resolve_device("cpu"))
        trials = resolve_trials(suite, plugins, model_identity(suite, model),
                                lands_on_zero(model), model.sde)
        sigma_max = float(model.sde.sigma(model.sde.T))
        print(json.dumps(plan_json(suite, trials, sigma_max), indent=1) if args.json
              else format_plan(suite, trials, sigma_max, own_levels(plugins, model.sde)))
        return 0
    device = distributed.resolve_device(suite.device)
    created = distributed.init(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        with contextlib.ExitStack() as holding:  # the report folder, once taken
            return _run_suite(args, plugins, suite, device, out_dir, holding)
    finally:
        if created:
            distributed.shutdown()


def _run_suite(args: argparse.Namespace, plugins: LoadedPlugins, suite: Suite,
               device: torch.device, out_dir: Path, holding: contextlib.ExitStack) -> int:
    lead = distributed.rank() == 0
    if suite.num_samples < distributed.world_size():
        raise SuiteError(f"num_samples = {suite.num_samples} cannot be shared by "
                         f"{distributed.world_size()} processes")
    uri = resolve_tracking_uri(args.tracking_uri, suite.tracking_uri)
    distributed.on_rank0(lambda: check_writable(out_dir))  # before any compute
    client = None

    def connect_tracking() -> None:  # rank 0's; a refusal stops every process
        nonlocal client
        client = connect(uri)  # fails here, before the model is even loaded

    distributed.on_rank0(connect_tracking)
    model = load_model(suite, plugins, device)
    check_conditional(suite, model.num_classes)
    with distributed.shared_failure():  # before any large allocation, on every process
        plan = plan_memory(model, STATE_DTYPES[suite.dtype], suite.num_samples,
                           suite.batch_size, device,
                           len(range(distributed.rank(), suite.num_samples,
                                     distributed.world_size())),
                           guided=any(entry.guidance for entry in suite.samplers))
    if plan.note:
        distributed.print0(f"note: {plan.note}", file=sys.stderr)
        suite = dataclasses.replace(suite, batch_size=plan.batch_size)
    identity = model_identity(suite, model)
    trials = resolve_trials(suite, plugins, identity, lands_on_zero(model), model.sde)
    trials = floor_trials(suite, plugins, model, identity) + trials
    # Taken once nothing can refuse the run any more (a refused run leaves no folder),
    # before the first record is read or written: a second run into it is refused.
    distributed.on_rank0(lambda: holding.enter_context(held(out_dir)))
    skipped = []
    if args.resume:
        # MLflow's record and the local one: a trial finished while the tracking server
        # was down is only in trials.jsonl, and must not run again.
        done = distributed.on_rank0(
            lambda: finished_config_hashes(client, suite.experiment)
            | finished_hashes(out_dir / "trials.jsonl"))
        skipped = [t for t in trials if t.config_hash in done]
        trials = [t for t in trials if t.config_hash not in done]

    sinks = (Sinks([LocalSink(out_dir), MLflowSink(client, uri, suite.experiment)])
             if lead else Sinks([]))
    runner = SuiteRunner(suite, plugins, model, device, sinks,
                         artifacts_dir=out_dir / "samples" if lead else None,
                         quiet=args.quiet)
    processes = (f" x {distributed.world_size()} processes"
                 if distributed.world_size() > 1 else "")
    distributed.print0(f"suite {suite.name}: {len(trials)} trials on {suite.model} "
                       f"({device}{processes}), {len(skipped)} skipped; tracking {uri}, "
                       f"experiment {suite.experiment!r}", file=sys.stderr)
    prepared = runner.prepare()
    for name, reason in prepared.skipped.items():
        distributed.print0(f"note: metric {name!r} left out: {reason}", file=sys.stderr)
    info = SuiteInfo(suite=suite, trials=trials, skipped=skipped, model_identity=identity,
                     environment=environment(device, suite.dtype, model),
                     sampler_origins={s.name: plugins.samplers.origin(s.name).to_dict()
                                      for s in suite.samplers})
    results = runner.run(info)
    if not lead:
        # torchrun stops every process as soon as one exits non-zero, which would cut
        # rank 0's report short; rank 0's exit status is the run's.
        return 0

    report = _write_report(out_dir, {t.config_hash for t in info.all_trials},
                           suite.experiment, suite.rank_across_schedules)
    if report is not None:
        sinks.report_written(report.files, report.series)
        print(report.files["leaderboard.md"].read_text())
    print(summary(results, len(skipped)))
    records = {"LocalSink": str(out_dir / "trials.jsonl"), "MLflowSink": f"MLflow ({uri})"}
    for sink, error in sinks.dropped:
        kept = [records.get(type(s).__name__, type(s).__name__) for s in sinks.active]
        print(f"warning: {type(sink).__name__} stopped mid-suite ({error}); every trial is "
              f"in {' and '.join(kept) or 'no record: rerun the suite'}", file=sys.stderr)
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


def _write_report(out_dir: Path, hashes: set[str], title: str,
                  rank_across_schedules: bool = False) -> Optional[Any]:
    """The report from `trials.jsonl`, written into a staging folder and then moved into
    place file by file (atomic renames), so a full disk never leaves a torn table or an
    empty plot; a report that cannot be written is a warning (the trials are recorded)."""
    from ..bench.report import records_from_jsonl, write_report  # pandas, matplotlib

    staging = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".report-"))
        results = records_from_jsonl(out_dir / "trials.jsonl", hashes)
        results.rank_across_schedules = rank_across_schedules
        report = write_report(results, staging, title=title)
        publish_folder(staging, out_dir)
        return dataclasses.replace(report, files={
            k: out_dir / Path(v).relative_to(staging) for k, v in report.files.items()})
    except Exception as err:  # the measurements are safe in trials.jsonl either way
        print(f"warning: the report could not be written to {out_dir}/ "
              f"({type(err).__name__}: {err}); every trial is in "
              f"{out_dir / 'trials.jsonl'}", file=sys.stderr)
        return None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def lands_on_zero(model: Any) -> bool:
    """Whether a grid's last step reaches sigma = 0 under the model's process (not VE,
    whose sigma(0) = sigma_min): the NFE a sampler's last step costs depends on it."""
    return float(model.sde.sigma(0.0)) == 0.0


def _toml_like(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, default=str)


def _sampling_work(suite: Suite, trials: list[Trial]) -> int:
    # A guided evaluation runs the network on a doubled batch unless w is 0 or 1.
    return sum(t.nfe * (1 if t.guidance in (None, 0.0, 1.0) else 2)
               for t in trials) * suite.num_samples


def reaches(grid: Any, sigma_max: float) -> bool:
    """Whether a grid starts at the process's largest noise level (up to rounding)."""
    return grid.sigma[0] >= sigma_max * (1 - 1e-9)


def own_levels(plugins: LoadedPlugins, sde: Any) -> Callable[[Trial], Optional[list]]:
    """For a trial: the noise levels its sampler calls the network at when the sampler
    chooses its own (its function's `levels(params, sde, steps)`, as an adapted
    diffusers scheduler has), else None."""
    def levels(t: Trial) -> Optional[list]:
        sampler = plugins.samplers.get(t.sampler)
        if not callable(getattr(sampler.fn, "levels", None)):
            return None
        return sampler.fn.levels(sampler.make_params(t.params), sde, t.steps)
    return levels


def _grid_line(t: Trial, sigma_max: Optional[float],
               levels: Optional[Callable[[Trial], Optional[list]]] = None) -> str:
    """`karras: sigma 80 .. 0.002 -> 0 [sigma_max]`: the first and last noise level the
    sampler steps from, the final one, and whether the grid starts at sigma_max; for a
    sampler on timesteps of its own, the levels it calls the network at."""
    name = t.schedule.short_label if t.schedule is not None else ""
    own = levels(t) if levels is not None else None
    if own:
        return (f"own timesteps (not {name}): network at sigma {own[0]:.4g} .. "
                f"{own[-1]:.4g}, {len(own)} calls")
    if t.grid is None or sigma_max is None:
        return name
    s = t.grid.sigma
    start = ("[starts at sigma_max]" if reaches(t.grid, sigma_max)
             else f"[starts below sigma_max = {sigma_max:.4g}]")
    return f"{name}: sigma {s[0]:.4g} .. {s[-2]:.4g} -> {s[-1]:.4g} {start}"


def format_plan(suite: Suite, trials: list[Trial], sigma_max: Optional[float] = None,
                levels: Optional[Callable[[Trial], Optional[list]]] = None) -> str:
    """The resolved configuration and trial list, as `--dry-run` prints it: one line per
    trial, with the NFE budget and the steps it resolved to, the NFE the sampler
    declares, and the sigma grid it will see."""
    lines = [f"suite {suite.name} ({suite.source})"]
    lines += [f"  {k} = {_toml_like(v)}" for k, v in flatten(suite.to_dict()).items()]
    lines.append(f"{len(trials)} trials: name, NFE budget -> steps and the NFE the sampler "
                 f"declares, config hash, schedule: the grid's first and last sigma before "
                 f"its final step -> its final sigma [whether it starts at sigma_max], "
                 f"hyperparameters")
    width = max((len(t.name) for t in trials), default=0)
    budgets = [",".join(map(str, t.budgets)) for t in trials]
    budget_width = max((len(b) for b in budgets), default=0)
    for t, budget in zip(trials, budgets):
        params = ", ".join(f"{k}={short_value(v)}" for k, v in t.params.items())
        # Trials given steps, not budgets, leave the column blank.
        asked = (f"budget={budget:<{budget_width}} -> " if budget
                 else " " * (budget_width + 11) if budget_width else "")
        lines.append(f"  {t.name:<{width}}  {asked}steps={t.steps:<4} nfe={t.nfe:<4} "
                     f"{t.config_hash[:12]}  {_grid_line(t, sigma_max, levels)}  "
                     f"{params}".rstrip())
    lines.append(f"sampling work: {_sampling_work(suite, trials):,} network evaluations "
                 f"(sample rows), not counting metrics")
    return "\n".join(lines)


def plan_json(suite: Suite, trials: list[Trial], sigma_max: float) -> dict[str, Any]:
    """`--dry-run --json`: the resolved configuration and every trial with its whole
    grid (t, sigma, s(t)), as plain JSON."""
    out = []
    for t in trials:
        grid = t.grid
        out.append({
            "name": t.name, "sampler": t.sampler, "params": t.params,
            "schedule": t.schedule.label if t.schedule is not None else None,
            "budgets": list(t.budgets), "steps": t.steps, "nfe_declared": t.nfe,
            "seed": t.seed, "guidance": t.guidance, "config_hash": t.config_hash,
            "grid": None if grid is None else {
                "t": list(grid.t), "sigma": list(grid.sigma), "scale": list(grid.scale),
                "first_sigma": grid.sigma[0], "last_sigma": grid.sigma[-2],
                "final_sigma": grid.sigma[-1], "reaches_sigma_max": reaches(grid, sigma_max)},
        })
    return strict_json({"suite": suite.to_dict(), "sigma_max": sigma_max, "trials": out,
                        "sampling_work": _sampling_work(suite, trials)})
