"""The plugin author's reference: every hook the harness calls, in the order it calls them.

A plugin is a module (or any object) with functions marked ``@harness.hookimpl`` whose
names and arguments match the specifications below. It is found through the
``harness`` entry-point group of its distribution::

    [project.entry-points.harness]
    my_sampler = "my_package.my_module"

The built-in samplers and models are plugins of exactly this kind (see ``plugins/``).

A plugin module should state the harness API version it was written for::

    harness_api_version = 1

A plugin that states a different major version is refused with a message saying so;
one that states none is loaded as if it said the current version.

Each registration hook receives a ``register`` function; call it once per thing the
plugin provides. Every implementation is called (no "first result wins"): a plugin
that raises is reported and its registrations are discarded, while the others load.
Hook implementations may accept any subset of a hook's arguments, by name.

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

#: The major version of this hook API. It changes only when a hook is removed or its
#: arguments or the contract of the objects passed through it change incompatibly.
HARNESS_API_VERSION = 1

PROJECT = "harness"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration: called once when the plugins are loaded ---------------------------

@hookspec
def harness_register_samplers(register: Callable[["Sampler"], None]) -> None:
    """Register samplers: call ``register(Sampler(...))`` once per sampler.

    A ``harness.Sampler`` names the sampler (unique across all plugins), its function
    (see ``harness.core.sampler`` for the call shape), its ``Params`` dataclass with declared
    ranges, its ``Capabilities`` (stochastic, order, NFE per step, PF-ODE) and a citation.
    A name that is already registered is refused: the later plugin fails to load (with
    a message naming both origins) and the first keeps the name. Built-in plugins load
    first, so a third-party plugin can never displace a built-in.
    """


@hookspec
def harness_register_models(register: Callable[["ModelSpec"], None]) -> None:
    """Register score models: call ``register(ModelSpec(...))`` once per model.

    A ``harness.ModelSpec`` has a ``name``, a ``load(device, **options) -> ScoreModel``
    factory (called only when the model is used, so registration stays cheap), a
    one-line ``description``, and ``options``: the keyword options ``load`` accepts,
    each with a one-line meaning (e.g. a checkpoint directory).
    """


@hookspec
def harness_register_metrics(register: Callable[["Metric"], None]) -> None:
    """Register metrics: call ``register(metric)`` once per metric.

    A metric (``harness.metrics.metric.Metric``) declares its name, unit and
    ``higher_is_better``, and computes its value from a trial's samples and context.
    Under torchrun every process computes it from all of the trial's samples, unless
    the metric shares the work out itself with ``harness.core.distributed`` (then every
    process must reach every collective).
    """
