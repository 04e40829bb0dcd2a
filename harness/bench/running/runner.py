"""Running a suite: the model and metrics once, then every trial, recorded through sinks.

How a trial runs: its sampler draws `num_samples` samples in batches of `batch_size`
with per-sample seeds (sample i depends only on (seed, i), so batching changes nothing),
on the model wrapped for that trial alone (`harness.core.counting`), whose counter gives
the NFE (rows / samples) and whose clock the network's time; wall-clock is measured
around sampling only (after a warm-up of the network and, before a sampler's first trial,
an untimed two-step run of that sampler; with device synchronisation; with `capture`, the
sampler loop compiled per batch shape, `harness.bench.running.capture`), then the metrics
see the samples, and only then is the sample grid drawn (a file that cannot be written
is a warning on a FINISHED trial). A trial that raises (any exception, or a plugin's
SystemExit), returns NaN/Inf, the wrong shape, dtype or device is recorded as FAILED with
its error and the suite goes on. Ctrl-C and SIGTERM (turned into an exception here) end
the current trial as KILLED and the suite as KILLED, never FINISHED; that clean-up is
shielded from a second Ctrl-C (`harness.bench.running.shield`). A streamed trial (the
suite's `stream`) hands each batch as it is drawn to `harness.bench.running.stream`
(decoding, feature extraction, PNG files, the first samples kept), timed apart as
`stream_s` and out of the wall-clock; its metrics read the features extracted there.

Under torchrun (`harness.core.distributed`) every process runs this same code on its own
share of the sample indices (indices[rank::world]); the samples are gathered back into
index order, so the metrics see exactly what one process would have drawn. The NFE is
summed over processes and the wall-clock is the slowest process's. Only rank 0 has
sinks. Work that can fail on one rank only (sampling, the plot only rank 0 draws, each
metric) runs inside `distributed.shared_failure()`, so a failure on any rank fails the
trial on all of them and none is left waiting in a collective.

What is measured lives here; how it is recorded lives in the sinks (`harness.bench.recording.sinks`).
"""

from __future__ import annotations

import math
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from ...core import distributed
from ...metrics.bootstrap import Bootstrap
from ...metrics.metric import Metric, SuiteContext, TrialContext
from ...core.guidance import guided
from ...core.fused_noise import draw_numbers, noise_backend
from ...core.host_allocator import keep_freed_memory
from ...core.labels import sample_labels
from ...core.counting import CountedModel, NFECounter
from ...core.model import NULL_LABEL, ScoreModel
from ...core.network_clock import NetworkClock
from ..recording.atomic import atomic_path
from ..recording.sample_images import check_image_data, write_sample_images
from .shield import interrupts_raise, shielded
from .guards import check_trial_host_memory
from .stream import TrialStream, samples_kept
from ...metrics.streamed_features import StreamedFeatures
from ...metrics.trial_features import SampleFeatures
from ...plugin.manager import LoadedPlugins
from ...models.precision import STATE_DTYPES, configure_model
from ...core.sampling import generate
from ...core.schedules import make_grid
from .capture import CAPTURED_NOISE, CapturedDraw, CapturedLoop
from .floor import held_out
from .progress import EtaEstimate, progress_line
from ..configuration.environment import environment
from .plan import Entry, FloorDraw, Plan, SamplerRun
from ..recording.sinks import FAILED, FINISHED, KILLED, Sinks, SuiteInfo, TrialResult
from ..configuration.suite import Suite, Trial
from .time_limit import time_limit
from ...metrics.timing import clock, forward_time, peak_memory, reset_peak_memory



#: The untimed warm-up run's grid: it warms kernels, so any schedule serves (a built-in
#: one, which every process has, whatever the trial's).
WARM_UP_SCHEDULE = "karras"


class TrialFailure(Exception):
    """A trial whose output cannot be used (non-finite samples, wrong shape, bad metric)."""



def load_model(suite: Suite, plugins: LoadedPlugins, device: torch.device) -> ScoreModel:
    """The suite's model on `device`, in the suite's dtype, in eval mode, its network in
    the suite's `network_dtype` and compiled if asked (`harness.models.precision`)."""
    model = plugins.models.get(suite.model).build(device, **suite.model_options)
    model = model.to(dtype=STATE_DTYPES[suite.dtype]).eval()
    network_dtype = None if suite.network_dtype == "native" else suite.network_dtype
    return configure_model(model, dtype=network_dtype, compile=suite.compile)


def bootstrap_conventions(bootstrap: Bootstrap) -> dict[str, Any]:
    """How the `*_ci_low`/`*_ci_high` values were made, logged beside them."""
    return {"bootstrap": f"{bootstrap.replicates} resamples of the trial's samples and of "
                         f"the reference set (with replacement; index sets shared by every "
                         f"trial with N = {bootstrap.n}: paired between samplers); a "
                         f"distance's interval follows its variance down to the second-"
                         f"order part at a distance of 0, others are estimate +- z se "
                         f"(harness.metrics.bootstrap)",
            "bootstrap_level": bootstrap.level}


def _trial_seed(trial: Trial) -> int:
    """A global torch seed from the config hash: metrics that draw random numbers give the
    same value whatever order the trials run in (which --resume changes)."""
    return int(trial.config_hash[:15], 16)


@dataclass
class PreparedMetrics:
    """The suite's metrics after `prepare`: per trial, once per suite, and left out."""

    per_trial: list[Metric] = field(default_factory=list)
    per_suite: list[Metric] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def is_per_suite(metric: Metric) -> bool:
    """Metrics whose value does not depend on the sampler (e.g. the model's reference
    NLL) declare `per_suite = True`: they are computed once and logged at the parent."""
    return bool(getattr(metric, "per_suite", False))


def run_plan(plan: Plan, sinks: Sinks, artifacts_dir: Optional[Path] = None,
             quiet: bool = False, samples_dir: Optional[Path] = None) -> list[TrialResult]:
    """Run every entry of `plan` (`harness.bench.running.plan.resolve_plan`), recorded through
    `sinks`; sample grids go to `artifacts_dir` when given. Returns the trials' results
    (the sinks have them too). The library call behind `harness run`."""
    keep_freed_memory()  # before the first trial: see `harness.core.host_allocator`
    if samples_dir is not None:  # refused before anything is computed
        check_image_data(plan.model.output_spec, plan.suite.model)
    runner = SuiteRunner(plan, sinks, artifacts_dir=artifacts_dir, quiet=quiet,
                         samples_dir=samples_dir)
    prepared = runner.prepare()
    for name, reason in prepared.skipped.items():
        distributed.print0(f"note: metric {name!r} left out: {reason}", file=sys.stderr)
    suite = plan.suite
    info = SuiteInfo(suite=suite, trials=plan.trials, skipped=list(plan.skipped),
                     model_identity=plan.model_identity,
                     environment=environment(plan.device, suite.dtype, plan.model),
                     sampler_origins={s.name: plan.plugins.samplers.origin(s.name).to_dict()
                                      for s in suite.samplers})
    return runner.run(info)


class SuiteRunner:
    """Runs the entries of one plan on its loaded model and reports to the sinks."""

    def __init__(self, plan: Plan, sinks: Sinks, artifacts_dir: Optional[Path] = None,
                 quiet: bool = False, samples_dir: Optional[Path] = None):
        self.plan = plan
        self.suite = suite = plan.suite
        self.plugins = plan.plugins
        self.model = model = plan.model
        self.device = device = plan.device
        self.dtype = STATE_DTYPES[suite.dtype]
        #: The plan's entries by the config hash of their trial (what the sinks see).
        self.entries: dict[str, Entry] = {e.trial.config_hash: e for e in plan.entries}
        self.sinks = sinks
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir is not None else None
        #: Where every sample of every trial is written as PNG (`--save-samples`), or None.
        self.samples_dir = Path(samples_dir) if samples_dir is not None else None
        self.quiet = quiet or distributed.rank() != 0
        # A terminal gets tqdm bars; a log (CI, `tox ... > log`) one line per trial.
        self.progress = not self.quiet and sys.stderr.isatty()
        self.log_lines = not self.quiet and not self.progress
        self.context = SuiteContext(model=model, model_name=suite.model, device=device,
                                    dtype=self.dtype,
                                    options={k: dict(v) for k, v in suite.metrics.items()},
                                    announce=self._announce)
        self.metrics = PreparedMetrics()
        #: How many of the first samples a streamed trial holds (`prepare`).
        self.keep = 0
        #: (sampler, guided) pairs already run once untimed (`_warm_sampler`).
        self._warmed: set[tuple[str, bool]] = set()

    def _announce(self, line: str) -> None:
        """A metric's note of costly one-time work, for the user (not in quiet runs)."""
        if not self.quiet:
            tqdm.write(line, file=sys.stderr)

    # --- once per suite ----------------------------------------------------------------
    def prepare(self) -> PreparedMetrics:
        """Prepare every metric once (reference statistics, test data) and warm up; in
        a streamed suite, first refuse a metric that would read every sample."""
        applicable = []
        for name in self.suite.metrics:
            metric = self.plugins.metrics.get(name)
            if not metric.applies_to(self.context):
                self.metrics.skipped[name] = f"does not apply to model {self.suite.model!r}"
                continue
            applicable.append(metric)
            (self.metrics.per_suite if is_per_suite(metric) else self.metrics.per_trial
             ).append(metric)
        if self.suite.stream:
            self.keep = samples_kept(self.metrics.per_trial, self.context,
                                     self.suite.num_samples)
        for metric in applicable:
            metric.prepare(self.context)
        # The guard's plan guessed the feature spaces (`guards`); now they are known.
        check_trial_host_memory(self.model, self.dtype, self.suite.num_samples,
                                self.plan.batch_size, self._feature_spaces().widths,
                                self.suite.stream)
        self._warm_up()
        return self.metrics

    def _feature_spaces(self) -> StreamedFeatures:
        """The feature spaces a trial's metrics declare (a streamed trial extracts these)."""
        return StreamedFeatures([space for metric in self.metrics.per_trial
                                 for space in metric.feature_spaces(self.context)],
                                self.model)

    def _warm_up(self) -> None:
        """Forward passes at the batch sizes the trials use, untimed, so that lazy
        initialisation and allocator growth are not charged to the first trial."""
        sizes = sorted({len(batch) for batch in self.plan.batches()})
        for size in sizes:
            forward_time(self.model, size, warmup=1, repeats=1, dtype=self.dtype)
        if 2 in self.plan.network_rows:
            for size in sizes:  # a guided evaluation runs the network on a doubled batch
                x = torch.zeros((2 * size, *self.model.data.shape), device=self.device,
                                dtype=self.dtype)
                with torch.no_grad():
                    self.model.denoise_labelled(x, 1.0, torch.full(
                        (2 * size,), NULL_LABEL, dtype=torch.int64, device=self.device))

    def suite_values(self) -> tuple[dict[str, float], dict[str, Any]]:
        """The per-suite metrics' values; one that fails is reported, not fatal."""
        values: dict[str, float] = {}
        params: dict[str, Any] = {}
        total = len(self.metrics.per_suite)
        for number, metric in enumerate(self.metrics.per_suite, 1):
            # A per-suite metric reads only `trial.suite`; there is no sampler or sample.
            trial = TrialContext(suite=self.context, sampler=None, params=None, grid=None,
                                 seed=0, samples=torch.empty(0))
            if not self.quiet:
                print(f"[suite metric {number}/{total}] computing {metric.name} once for "
                      f"the suite ({metric.description})", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                with distributed.shared_failure():
                    computed = metric.compute(trial)
                values.update({k: float(v) for k, v in computed.items()})
                params.update(metric.params())
                if not self.quiet:
                    print(f"[suite metric {number}/{total}] {metric.name} done in "
                          f"{time.perf_counter() - started:.1f} s", file=sys.stderr,
                          flush=True)
            except (Exception, SystemExit) as err:  # the trials are still worth running
                distributed.print0(f"warning: per-suite metric {metric.name!r} failed: "
                                   f"{type(err).__name__}: {err}", file=sys.stderr)
        return values, params

    # --- the suite -----------------------------------------------------------------------
    def run(self, info: SuiteInfo) -> list[TrialResult]:
        """Run every trial of `info`; returns their results (the sinks have them too)."""
        results: list[TrialResult] = []
        status = KILLED
        started = time.perf_counter()
        self.sinks.suite_started(info)
        try:
            with interrupts_raise():
                # Nothing left to run (--resume): the per-suite values are not needed.
                values, params = self.suite_values() if info.trials else ({}, {})
                if values or params:
                    self.sinks.suite_values(values, params)
                bar = tqdm(info.trials, desc="trials", unit="trial", file=sys.stderr,
                           disable=not self.progress, dynamic_ncols=True)
                eta = EtaEstimate()
                names = [metric.name for metric in self.metrics.per_trial]
                for trial in bar:
                    bar.set_postfix_str(trial.name)
                    results.append(self.run_trial(trial))
                    eta.add(results[-1])
                    if self.log_lines:
                        done = len(results)
                        print(progress_line(results[-1], done, len(info.trials),
                                            eta.remaining(info.trials[done:]), names),
                              file=sys.stderr, flush=True)
            status = FAILED if any(r.status == FAILED for r in results) else FINISHED
        finally:
            with shielded():
                self.sinks.suite_ended(results, status, time.perf_counter() - started)
        return results

    def run_trial(self, trial: Trial) -> TrialResult:
        """One trial, always ended in the sinks: FINISHED, FAILED or (re-raised) KILLED."""
        self.sinks.trial_started(trial)
        result = TrialResult(trial, FINISHED, started=time.time())
        limit = self.suite.trial_time_limit
        if limit is not None:
            result.params["trial_time_limit_s"] = limit
        try:
            with time_limit(limit, "trial", "trial_time_limit"):
                self._measure(trial, result)
        except KeyboardInterrupt as err:  # Ctrl-C, Terminated: end it, then stop
            reason = str(err) or type(err).__name__
            with shielded():
                self.sinks.trial_interrupted(trial, reason)
            raise
        except BaseException as err:  # also a plugin's SystemExit or GeneratorExit
            result.status = FAILED
            result.error = f"{type(err).__name__}: {err}"
            result.traceback = traceback.format_exc()
        result.ended = time.time()
        self.sinks.trial_ended(result)
        return result

    # --- measuring one trial ---------------------------------------------------------------
    def _measure(self, trial: Trial, result: TrialResult) -> None:
        entry = self.entries[trial.config_hash]
        if isinstance(entry, FloorDraw):
            self._measure_floor(entry, result)
            return
        sampler, params, grid = entry.sampler, entry.params, entry.grid
        torch.manual_seed(_trial_seed(trial))

        def draw(indices: list[int], network: ScoreModel,
                 evaluations: Optional[NFECounter] = None,
                 sampler: Any = sampler) -> Tensor:
            # What the sampler calls: `network`, or under guidance a guided model per
            # batch around it, whose evaluations (the sampler's NFE) `evaluations` counts.
            model = guided(network, self._labels(trial, indices, self.device),
                           trial.guidance)
            if evaluations is not None and model is not network:
                model = CountedModel(model, nfe=evaluations)
            return generate(model, sampler, grid, trial.seed, indices, params,
                            dtype=self.dtype)

        self._warm_sampler(entry)
        batches = self.plan.batches()
        result.params["noise_backend"] = noise_backend(
            self.device, draw_numbers(max(map(len, batches), default=0), self.model.data.dim))
        timed = self._captured(entry, draw, result) if self.suite.capture != "off" else draw
        stream = self._stream(trial) if self.suite.stream else None
        samples = self._sample_timed(trial, timed, result, stream)
        if isinstance(timed, CapturedDraw) and timed.captured:
            # One graph: the network's share of it cannot be timed (`capture`).
            del result.metrics["network_s"], result.metrics["overhead_ratio"]
            result.params["noise_backend"] = CAPTURED_NOISE
        self._check_nfe(trial, result)
        if stream is None:
            samples, streamed = self._decoded(samples, result), None
        else:
            streamed = self._streamed(trial, stream, result)
        n = self.suite.num_samples
        context = TrialContext(suite=self.context, sampler=sampler, params=params, grid=grid,
                               seed=trial.seed, samples=samples,
                               generate=lambda indices: self.model.decode(
                                   draw(list(indices), self.model)).cpu(),
                               bootstrap=Bootstrap(n), labels=self._labels(trial, range(n)),
                               guidance=trial.guidance, streamed=streamed)
        if trial.guidance is not None:
            result.params.update(guidance_conventions(trial))
        # The timing above drew from the global generator as much as this process's
        # share needed; metrics that draw from it start from the same state everywhere.
        torch.manual_seed(_trial_seed(trial))
        self._compute_metrics(self.metrics.per_trial, context, result)
        self._write_sample_grid(trial, samples, result)
        if stream is None:  # a streamed trial wrote them as they came
            self._write_sample_images(trial, samples, result)

    def _stream(self, trial: Trial) -> TrialStream:
        """Where a streamed trial's batches go (`harness.bench.running.stream`): the
        feature spaces every metric declares, the first `keep` samples, the PNG files."""
        images = (None if self.samples_dir is None
                  else self.samples_dir / portable_file_name(trial.name))
        return TrialStream(self.model, self.device, self._feature_spaces(), self.keep,
                           images)

    def _streamed(self, trial: Trial, stream: TrialStream, result: TrialResult
                  ) -> dict[tuple[str, str], SampleFeatures]:
        """A streamed trial's features (its last rows extracted), with its decoding
        time, its PNG files and their warnings recorded in `result`."""
        with distributed.shared_failure():
            features = stream.features.finish()
        if self.model.decodes:
            result.metrics["decode_s"] = stream.decode_seconds
        written = distributed.all_reduce_sum(torch.tensor([stream.written],
                                                          dtype=torch.float64))
        # Each process writes its own share of the PNG files: rank 0 records them all.
        warnings = [message if rank == 0 else f"rank {rank}: {message}"
                    for rank, messages in enumerate(distributed.gather_objects(
                        stream.warnings)) for message in messages]
        if self.samples_dir is not None and not warnings:
            folder = self.samples_dir / portable_file_name(trial.name)
            result.params["sample_images"] = (f"{folder} ({int(written)} PNG files, "
                                              f"EDM's layout)")
        for message in warnings:
            _file_not_written(trial, result, message)
        return features

    def _decoded(self, samples: Tensor, result: TrialResult) -> Tensor:
        """What metrics and the grid see: a latent model's samples through its decoder
        (`ScoreModel.decode`) in batches of the plan's size on the run's device, timed
        apart as `decode_s` (after the sampler's clock and its NFE count were read);
        other models' samples as they are."""
        if not self.model.decodes:
            return samples
        size = self.plan.batch_size
        start = clock(self.device)
        with torch.no_grad():
            images = torch.cat([self.model.decode(samples[i:i + size].to(self.device)).cpu()
                                for i in range(0, samples.shape[0], size)])
        result.metrics["decode_s"] = clock(self.device) - start
        return images

    def _warm_sampler(self, run: SamplerRun) -> None:
        """The first trial of each sampler (guided or not) is preceded by an untimed
        two-step run at the trial's batch size: the sampler's own kernels, its noise and
        a compiled network's shapes are then not charged to that trial's clock (on a GPU
        they made the first trial of a sampler 2-4 times slower than the next)."""
        trial = run.trial
        key = (trial.sampler, trial.guidance is not None)
        if key in self._warmed:
            return
        batches = self.plan.batches()
        grid = make_grid(self.model.sde, WARM_UP_SCHEDULE, 2)
        with distributed.shared_failure():  # every rank enters: it is a collective
            if batches:
                model = guided(self.model, self._labels(trial, batches[0], self.device),
                               trial.guidance)
                generate(model, run.sampler, grid, trial.seed, batches[0], run.params,
                         dtype=self.dtype)
        self._warmed.add(key)

    def _captured(self, run: SamplerRun, draw: Callable[..., Tensor],
                  result: TrialResult) -> CapturedDraw:
        """The trial's draw with its sampler loop captured at every batch size of the
        plan, untimed (`harness.bench.running.capture`); its params say how it ran."""
        captured = CapturedDraw(draw, CapturedLoop(run.sampler, self.device))
        with distributed.shared_failure():
            result.params["capture"] = captured.prepare(self.model, self.plan.batches())
        return captured

    def _labels(self, trial: Trial, indices: Any, device: Any = "cpu") -> Optional[Tensor]:
        """The intended classes of samples `indices` of a guided trial (from (seed, i))."""
        if trial.guidance is None:
            return None
        return sample_labels(trial.seed, indices, self.model.num_classes, trial.labels,
                             device)

    def _measure_floor(self, floor: FloorDraw, result: TrialResult) -> None:
        """The set metrics on held-out real data of the suite's size (no sampler)."""
        trial = floor.trial
        samples, labels = held_out(self.model, self.suite.num_samples, floor.draw)
        samples = samples.to(self.dtype)
        context = TrialContext(suite=self.context, sampler=None, params=None, grid=None,
                               seed=trial.seed, samples=samples,
                               bootstrap=Bootstrap(samples.shape[0]), labels=labels)
        torch.manual_seed(_trial_seed(trial))
        self._compute_metrics([m for m in self.metrics.per_trial
                               if getattr(m, "on_real_data", False)], context, result)
        self._write_sample_grid(trial, samples, result)

    def _compute_metrics(self, metrics: list[Metric], context: TrialContext,
                         result: TrialResult) -> None:
        """Every metric's values (finite, or the trial fails), with bootstrap intervals."""
        bootstrap = context.bootstrap
        start = time.perf_counter()
        for metric in metrics:
            began = time.perf_counter()
            with distributed.shared_failure():
                values = metric.compute(context)
                for key, value in values.items():
                    if not isinstance(value, (int, float)) or not math.isfinite(value):
                        raise TrialFailure(f"metric {metric.name!r} gave {key} = {value!r}")
            result.metrics.update({k: float(v) for k, v in values.items()})
            # What each metric costs (its bootstrap included), beside the sampling time.
            result.metrics[f"{metric.name}_s"] = time.perf_counter() - began
            result.params.update(metric.params())
        if bootstrap.values:
            result.metrics.update(bootstrap.intervals(result.metrics))
            result.replicates = bootstrap.recorded()  # with the linear parts
            result.minimums = {k: v for k, v in bootstrap.minimum.items() if v is not None}
            # Which way is better, for the report's best/tied marks (replicates are keyed
            # by metric name; another key of a metric follows the metric's direction).
            result.higher_is_better = {
                key: bool(m.higher_is_better) for key in bootstrap.values for m in metrics
                if key == m.name or key.startswith(f"{m.name}_")}
            result.params.update(bootstrap_conventions(bootstrap))
        result.metrics["metrics_s"] = time.perf_counter() - start

    def _write_sample_grid(self, trial: Trial, samples: Tensor, result: TrialResult) -> None:
        """The trial's sample grid, after everything is measured: a file that cannot be
        written (read-only folder, full disk) is a warning, never a failed trial, and is
        written atomically, so no empty or torn picture is left behind."""
        if self.artifacts_dir is None:  # rank 0 alone draws it; nothing collective here
            return
        path = self.artifacts_dir / f"{portable_file_name(trial.name)}.png"
        where = "" if trial.schedule is None else f", {trial.schedule.short_label}"
        try:
            from ..reporting import plots  # matplotlib: only when a trial is drawn

            with atomic_path(path) as temporary:
                plots.sample_grid(samples, self.model.output_spec.value_range, temporary,
                                  title=f"{trial.name} ({self.suite.model}{where})")
            result.artifacts["samples.png"] = path
        except Exception as err:
            _file_not_written(trial, result, f"sample grid not written to {path}: "
                                             f"{type(err).__name__}: {err}")

    def _write_sample_images(self, trial: Trial, samples: Tensor, result: TrialResult
                             ) -> None:
        """Every sample as a PNG file (`--save-samples`), after everything is measured;
        as for the grid, a failure to write is a warning, never a failed trial."""
        if self.samples_dir is None:  # not asked for, or not rank 0
            return
        folder = self.samples_dir / portable_file_name(trial.name)
        try:
            written = write_sample_images(samples, list(range(samples.shape[0])),
                                          self.model.output_spec, folder)
            # A path in the params, not an artefact: the tracking store is not a copy
            # of tens of thousands of images.
            result.params["sample_images"] = f"{folder} ({written} PNG files, EDM's layout)"
        except Exception as err:
            _file_not_written(trial, result, f"sample images not written to {folder}: "
                                             f"{type(err).__name__}: {err}")

    def _check_nfe(self, trial: Trial, result: TrialResult) -> None:
        """Flag (not fail) a trial whose counted NFE per sample is not what its sampler
        declares: its name and step budget were chosen from the declaration, so it would
        otherwise be compared with samplers at another budget without a word."""
        counted = result.metrics["nfe"]
        if abs(counted - trial.nfe) > 1e-9 * max(1.0, trial.nfe):
            warning = (f"nfe_mismatch: counted {counted:g} network evaluations per sample, "
                       f"the sampler declares {trial.nfe} for {trial.steps} steps")
            result.warnings.append(warning)
            distributed.print0(f"warning: {trial.name}: {warning}", file=sys.stderr)

    def _sample_timed(self, trial: Trial,
                      draw: Callable[[list[int], ScoreModel, NFECounter], Tensor],
                      result: TrialResult, stream: Optional[TrialStream] = None) -> Tensor:
        """Every sample of the trial (this process draws its share), with NFE, wall-clock,
        overhead and memory recorded in `result`; for a streamed trial the first
        `stream.keep` samples, the time spent in `stream` taken out of the wall-clock and
        logged as `stream_s`. The model is wrapped for this trial
        alone: `network` counts and times what the network ran; `evaluations` counts
        what the sampler called (the network's own counter, or under guidance the guided
        models')."""
        n = self.suite.num_samples
        network = CountedModel(self.model, NetworkClock(self.device))
        evaluations = network.nfe if trial.guidance is None else NFECounter()
        reset_peak_memory(self.device)
        distributed.barrier()  # every process starts the clock together
        start = clock(self.device)
        with distributed.shared_failure():
            local = self._sample(trial, lambda indices: draw(indices, network, evaluations),
                                 self.plan.batches(), stream)
            local_wall = clock(self.device) - start - (stream.seconds if stream else 0.0)
            # Before the gather, whose buffers are no part of sampling.
            memory, memory_kind = peak_memory(self.device)
            if stream is not None:
                memory = max(memory, stream.sampling_peak)
        local_network = network.clock.seconds()
        samples = distributed.gather_concat(local)
        wall = distributed.all_reduce_max(local_wall)
        counts = distributed.all_reduce_sum(torch.tensor(
            [evaluations.rows, network.nfe.rows, network.nfe.calls], dtype=torch.float64))
        rows, network_rows, network_calls = (float(c) for c in counts)
        # Each process's wall over the time inside its own network calls of this same run
        # (>= 1 up to the timer's resolution); the worst process is reported.
        overhead = distributed.all_reduce_max(
            local_wall / local_network if local_network else math.nan)
        nfe = rows / n
        result.metrics.update({
            "nfe": nfe, "nfe_expected": float(trial.nfe), "wall_clock_s": wall,
            "samples_per_s": n / wall if wall > 0 else math.inf,
            "s_per_nfe": wall / nfe if nfe > 0 else math.nan,
            "network_s": distributed.all_reduce_max(local_network),
            "overhead_ratio": overhead,
            "peak_memory_mb": distributed.all_reduce_max(memory) / 2**20,
        })
        if stream is not None:
            result.metrics["stream_s"] = distributed.all_reduce_max(stream.seconds)
        if trial.guidance is not None:  # what the network ran, beside what was asked of it
            result.metrics.update({"network_evals": network_rows / n,
                                   "network_calls": network_calls})
        result.params["peak_memory_kind"] = memory_kind + (
            ", the largest over processes" if distributed.world_size() > 1 else "")
        return samples

    def _sample(self, trial: Trial, draw: Callable[[list[int]], Tensor],
                batches: list[list[int]], stream: Optional[TrialStream] = None) -> Tensor:
        """The samples of this process's `batches` of indices, each batch checked for
        shape and finiteness; streamed, each batch goes to `stream`, which keeps the
        first samples alone."""
        shape = tuple(self.model.data.shape)
        parts = []
        bar = tqdm(batches, desc=trial.name, unit="batch", file=sys.stderr, leave=False,
                   disable=not self.progress or len(batches) < 2, dynamic_ncols=True)
        for indices in bar:
            x = draw(indices)
            if not isinstance(x, Tensor) or tuple(x.shape) != (len(indices), *shape):
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise TrialFailure(f"sampler returned shape {got}, expected "
                                   f"{(len(indices), *shape)}")
            self._check_dtype_device(x)
            bad = (~torch.isfinite(x)).flatten(1).any(dim=1)
            if bad.any():
                raise TrialFailure(f"sampler returned NaN/Inf in {int(bad.sum())} of "
                                   f"{len(indices)} samples (batch from sample "
                                   f"{indices[0]})")
            if stream is None:
                parts.append(x.detach().to("cpu"))
            else:
                stream.add(indices, x)
        return torch.cat(parts) if stream is None else stream.kept_rows()

    def _check_dtype_device(self, x: Tensor) -> None:
        """Samples in another dtype or on another device than the run's were not made
        the way the trial is recorded (e.g. float64 state in a float32 run)."""
        if x.dtype != self.dtype:
            raise TrialFailure(f"sampler returned {x.dtype} samples in a "
                               f"{self.suite.dtype} run; keep the state in x's dtype")
        want = self.device
        if x.device.type != want.type or (want.index is not None
                                          and x.device.index != want.index):
            raise TrialFailure(f"sampler returned samples on {x.device}, the run is on "
                               f"{want}; keep the state on x's device")



def portable_file_name(name: str) -> str:
    """A trial's name as a file name every file system takes: the `:` of an adapted
    sampler (`kdiffusion:euler-6nfe-seed0`) and anything else Windows refuses become
    `_`."""
    return re.sub(r'[<>:"/\\|?*\x00-\x1f]', "_", name)


def guidance_conventions(trial: Trial) -> dict[str, Any]:
    """How a guided trial's labels and costs are defined, logged beside its values."""
    labels = trial.labels if isinstance(trial.labels, str) else list(trial.labels)
    return {"guidance": trial.guidance, "guidance_labels": labels,
            "guidance_convention": "D_w = D_u + w (D_c - D_u) (classifier-free guidance; "
                                   "w = 1 conditional, w = 0 unconditional)",
            "nfe_convention": "nfe: guided evaluations per sample (the sampler's calls); "
                              "network_evals: network rows per sample (2 per guided "
                              "evaluation when w is not 0 or 1: one doubled batch); "
                              "network_calls: forward passes"}


def summary(results: list[TrialResult], skipped: int = 0) -> str:
    """A short account of the suite: counts, then each failed trial and its error."""
    failed = [r for r in results if r.status == FAILED]
    lines = [f"{len(results) - len(failed)} trials finished, {len(failed)} failed"
             + (f", {skipped} skipped (already finished; --resume)" if skipped else "")]
    lines += [f"  FAILED {r.trial.name}: {r.error}" for r in failed]
    return "\n".join(lines)


def _file_not_written(trial: Trial, result: TrialResult, message: str) -> None:
    """A file made from the samples that could not be written: a warning of the trial
    (in its record, and among what the run did not keep), never a failure."""
    result.warnings.append(message)
    result.unrecorded.append(message)
    print(f"warning: {trial.name}: {message}", file=sys.stderr)
