"""The plugin author's reference: every hook the harness calls, in the order it calls them.

A plugin is a module (or any object) with functions marked ``@harness.hookimpl`` whose
names and arguments match the specifications below. It is found through the
``harness`` entry-point group of its distribution::

    [project.entry-points.harness]
    my_sampler = "my_package.my_module"

The built-in samplers, time schedules, models, metrics and sinks are plugins of exactly this
kind (see ``plugins/``).

A plugin module should state the harness API version it was written for::

    harness_api_version = 1

A plugin that states a different major version is refused with a message saying so;
one that states none is loaded as if it said the current version.

Each registration hook receives a ``register`` function; call it once per thing the
plugin provides. Every implementation is called (no "first result wins"): a plugin
that raises is reported and its registrations are discarded, while the others load.
Hook implementations may accept any subset of a hook's arguments, by name. Each hook's
docstring says when it is called, how often, on which processes under torchrun, and
documents every argument with a ``:param:`` line.

Tracing: set ``HARNESS_TRACE_HOOKS=1`` to print every hook call and its result to stderr.
Disabling: set ``HARNESS_DISABLE_PLUGINS=name1,name2`` (entry-point names) or pass
``--disable-plugin NAME`` to the ``harness`` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from .metrics.metric import Metric
    from .plugin.registry import ModelSpec
    from .core.sampler import Sampler
    from .core.time_grid import Schedule

#: The major version of this hook API. It changes only when a hook is removed or its
#: arguments or the contract of the objects passed through it change incompatibly.
HARNESS_API_VERSION = 1

PROJECT = "harness"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration: called once when the plugins are loaded ---------------------------
#
# Every hook below is called in the same way: once per plugin that implements it, each
# time the plugins are loaded (once per process: ``harness`` loads them at start-up and
# keeps them), in the order the plugins load (built-ins first). Under torchrun every
# process loads the plugins and calls every hook, before the processes join their group:
# a hook must not use collectives, and must register the same things on every process.
# Each implementation's return value is ignored; there is no "first result wins".


@hookspec
def harness_register_samplers(register: Callable[["Sampler"], None]) -> None:
    """Register samplers: call ``register(Sampler(...))`` once per sampler.

    Called once per loading of the plugins (once per process; on every process under
    torchrun), for each plugin that implements it. Every implementation is called and
    its return value ignored: no first result wins.

    :param register: Takes a ``harness.Sampler`` naming the sampler (unique across all
        plugins), its function (see ``harness.core.sampler`` for the call shape), its
        ``Params`` dataclass with declared ranges, its ``Capabilities`` (stochastic,
        order, NFE per step, PF-ODE) and a citation. Anything else is refused with a
        ``PluginError``. A name that is already registered is refused: the later plugin
        fails to load (with a message naming both origins) and the first keeps the name.
        Built-in plugins load first, so a third-party plugin can never displace a
        built-in.
    """


@hookspec
def harness_register_schedules(register: Callable[["Schedule"], None]) -> None:
    """Register time schedules: call ``register(Schedule(...))`` once per schedule.

    Called once per loading of the plugins (once per process; on every process under
    torchrun), for each plugin that implements it. Every implementation is called and
    its return value ignored: no first result wins. A schedule's function is called when
    a suite's trials are resolved (to check and show their grids) and once per trial,
    on every process.

    :param register: Takes a ``harness.Schedule`` naming the schedule (unique across all
        plugins; what a suite's ``schedule`` names), its function
        ``fn(sde, steps, params)`` returning the ``steps`` times t_0 > ... > t_{N-1} of
        the grid within [t_min, T] (the harness appends t = 0 and checks them; a
        schedule in noise levels converts them with ``harness.times_of_sigmas``), its
        ``Params`` dataclass with declared ranges (a suite may set them:
        ``schedule = {name = "karras", rho = 5.0}``) and a citation. A name that is
        already registered is refused, as for samplers; built-ins load first.
    """


@hookspec
def harness_register_models(register: Callable[["ModelSpec"], None]) -> None:
    """Register score models: call ``register(ModelSpec(...))`` once per model.

    Called once per loading of the plugins (once per process; on every process under
    torchrun), for each plugin that implements it. Every implementation is called and
    its return value ignored: no first result wins. The ``load`` factory of a model is
    called later, once per suite that uses the model, on every process.

    :param register: Takes a ``harness.ModelSpec`` with a ``name``, a
        ``load(device, **options) -> ScoreModel`` factory (called only when the model is
        used, so registration stays cheap), a one-line ``description``, and ``options``:
        the keyword options ``load`` accepts, each with a one-line meaning (e.g. a
        checkpoint directory). A model that has reference data (the real side of FID,
        test points for the NLL) provides them through ``ScoreModel.reference_data`` and
        its features through ``ScoreModel.feature_extractor``. A class-conditional model
        declares ``num_classes`` on its spec (``None`` when only the loaded model knows
        it) and implements ``ScoreModel._denoise_labelled(x, sigma, labels)``, a label
        ``NULL_LABEL`` asking for the unconditional denoiser; suites may then guide it
        (``harness.GuidedModel``), and ``ScoreModel.classifier`` serves class accuracy.
        A network with untrained (random) weights, registered to time samplers on a
        network of realistic size, says so with ``trained=False`` on its spec and its
        ``ScoreModel``: every metric with ``needs_trained_model`` is then refused on it
        before any compute.
    """


@hookspec
def harness_register_metrics(register: Callable[["Metric"], None]) -> None:
    """Register metrics: call ``register(metric)`` once per metric.

    Called once per loading of the plugins (once per process; on every process under
    torchrun), for each plugin that implements it. Every implementation is called and
    its return value ignored: no first result wins. The registered instance is then
    used by every suite of the process: the runner calls ``applies_to(suite)`` and
    ``prepare(suite)`` once per suite, and ``compute(trial)`` once per trial (or once
    per suite when the metric declares ``per_suite = True``), on every process.

    :param register: Takes an instance of a ``harness.Metric`` subclass that declares
        ``name`` (unique across all plugins; the key of its main value), ``unit`` and
        ``higher_is_better``, optionally ``per_suite``, and computes
        ``{name: value, name_<what>: value, ...}`` (finite floats) from a
        ``harness.TrialContext``. Under torchrun every process computes it from all of
        the trial's samples (``trial.samples`` is the same everywhere), unless the metric
        shares the work out with ``harness.local_rows``, ``harness.all_reduce_sum`` and
        ``harness.gather_concat``; every process must then reach every collective, with
        local work that can fail wrapped in ``harness.shared_failure()``.
        ``harness.testing.check_metric`` checks all of this.
    """


@hookspec
def harness_register_sinks(register: Callable[..., None]) -> None:
    """Register sinks, which record results: call ``register(name, make)`` once per sink.

    Called once per loading of the plugins (once per process; on every process under
    torchrun), for each plugin that implements it. Every implementation is called and
    its return value ignored: no first result wins. A sink's ``make`` is called once
    per ``harness run``, on rank 0 only under torchrun (the other processes record
    nothing), when the trials are planned and before the first starts. The sink it
    returns is then called as ``harness.bench.recording.sinks`` lists: ``trial_ended`` receives
    each trial's ``TrialRecord`` (``harness.bench.recording.record``), the same record that
    ``trials.jsonl`` and MLflow hold. The built-in sinks (``trials.jsonl``, MLflow) are
    registered the same way.

    :param register: Takes ``(name, make, description="")``: a ``name`` unique across
        all plugins, a factory ``make(context)`` receiving a
        ``harness.bench.recording.sinks.SinkContext`` (the report folder, the suite, the
        experiment, the MLflow tracking URI and client) and returning an object with
        the sink methods it needs (the others are not called), or None to stay out of
        this run, and a one-line ``description`` for ``harness plugins``. A factory
        that raises, or a sink method that raises, is reported and that sink left out
        for the rest of the run, which goes on and exits with status 3 (not everything
        was recorded).
    """
