"""``harness plugins``: every registered sampler, schedule, model, metric and sink, and
where it comes from."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..plugin.adapted import adapted_libraries, library_of
from ..plugin.manager import LoadedPlugins, get_plugins


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plugins", help="list registered samplers, models, metrics and sinks",
        description="List every registered sampler, model, metric and sink with its "
                    "one-line summary, its origin (module, distribution, version) and "
                    "declared capabilities.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def describe(loaded: LoadedPlugins) -> dict[str, Any]:
    """Everything `harness plugins` shows, as plain data."""
    samplers = []
    for name, entry in loaded.samplers.entries():
        sampler = entry.item
        defaults = sampler.make_params()
        samplers.append({
            "name": name, "summary": sampler.summary, "citation": sampler.citation,
            "origin": entry.origin.to_dict(),
            # Steps on timesteps of its own (`levels`), not on the grid: the kit's order
            # problems, whose grids stop short of 0, do not measure its order.
            "own_timesteps": callable(getattr(sampler.fn, "levels", None)),
            "capabilities": sampler.capabilities.to_dict(defaults),
            "params": [_jsonable(row) for row in sampler.params.describe()],
        })
    schedules = [{"name": name, "summary": entry.item.summary,
                  "citation": entry.item.citation, "origin": entry.origin.to_dict(),
                  "params": [_jsonable(row) for row in entry.item.params.describe()]}
                 for name, entry in loaded.schedules.entries()]
    models = [{"name": name, "description": entry.item.description,
               "options": entry.item.options, "origin": entry.origin.to_dict(),
               "num_classes": getattr(entry.item, "num_classes", 0)}
              for name, entry in loaded.models.entries()]
    metrics = []
    for name, entry in loaded.metrics.entries():
        metric = entry.item
        metrics.append({"name": name, "unit": getattr(metric, "unit", None),
                        "higher_is_better": getattr(metric, "higher_is_better", None),
                        "description": getattr(metric, "description", "") or "",
                        "origin": entry.origin.to_dict()})
    sinks = [{"name": name, "description": entry.item.description,
              "origin": entry.origin.to_dict()} for name, entry in loaded.sinks.entries()]
    return {
        "samplers": samplers, "adapted_libraries": adapted_libraries(loaded),
        "schedules": schedules, "models": models, "metrics": metrics, "sinks": sinks,
        "plugins": [o.to_dict() for o in loaded.plugins],
        "disabled": loaded.disabled,
        "failures": [{"plugin": f.plugin, "stage": f.stage, "message": f.message}
                     for f in loaded.failures],
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    def fix(v):
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, tuple):
            return list(v)
        return v
    return {k: fix(v) for k, v in row.items()}


def _origin(o: dict[str, Any]) -> str:
    dist = f"{o['distribution']} {o['version']}" if o["distribution"] else "(no distribution)"
    return f"{o['module']}  [{dist}]"


def format_text(info: dict[str, Any]) -> str:
    native = [s for s in info["samplers"] if not library_of(s["name"])]
    lines = [f"Samplers ({len(native)}):"]
    lines += _sampler_lines(native)
    for library, about in info["adapted_libraries"].items():
        adapted = [s for s in info["samplers"] if library_of(s["name"]) == library]
        shipped = " ".join(str(v) for v in (about["distribution"], about["version"]) if v)
        lines.append(f"Adapted from {shipped or library} ({len(adapted)}, by "
                     f"{_origin(adapted[0]['origin'])}): run as the library runs them; "
                     f"their params are its keyword arguments (--json lists them)")
        lines += _sampler_lines(adapted, params=False)
        reasons = about["not_adapted"]
        if reasons:
            lines.append(f"  not adapted ({len(reasons)}):")
            lines += [f"    {what}: {why}" for what, why in reasons.items()]
    lines += _other_lines(info)
    return "\n".join(lines)


def _sampler_lines(samplers: list[dict[str, Any]], params: bool = True) -> list[str]:
    lines = []
    for s in samplers:
        caps = s["capabilities"]
        kind = "stochastic" if caps["stochastic"] else "deterministic"
        nfe = f"{caps['nfe_per_step']} NFE/step"
        if caps["final_step_nfe"] is not None:
            nfe += f" ({caps['final_step_nfe']} on the last)"
        if caps["extra_nfe"]:
            nfe += f" + {caps['extra_nfe']} per run"
        flags = ", PF-ODE" if caps["pf_ode"] else ""
        order = ("order not measured (own timesteps)" if s.get("own_timesteps")
                 else f"order {caps['order']:g}" + ("" if caps["order"] else
                                                      " (fixed bias)"))
        lines.append(f"  {s['name']:<22} {kind}, {order}, {nfe}{flags}")
        if s["summary"]:  # the first line of the sampler function's docstring
            lines.append(f"  {'':<22} {s['summary']}")
        if not params:
            continue
        lines.append(f"  {'':<22} from {_origin(s['origin'])}")
        shown = ", ".join(f"{p['name']}={p['default']}" for p in s["params"])
        if shown:
            lines.append(f"  {'':<22} params: {shown}")
    return lines


def _other_lines(info: dict[str, Any]) -> list[str]:
    lines = [f"Schedules ({len(info['schedules'])}):"]
    for s in info["schedules"]:
        params = ", ".join(f"{p['name']}={p['default']}" for p in s["params"])
        lines.append(f"  {s['name']:<22} {s['summary']}" + (f" ({params})" if params else ""))
        lines.append(f"  {'':<22} {s['citation']}; from {_origin(s['origin'])}")
    lines.append(f"Models ({len(info['models'])}):")
    for m in info["models"]:
        lines.append(f"  {m['name']:<22} {m['description']}")
        classes = m.get("num_classes", 0)
        guidable = ("; classes known once loaded" if classes is None
                    else f"; {classes} classes (guidance)" if classes else "")
        lines.append(f"  {'':<22} from {_origin(m['origin'])}{guidable}")
    lines.append(f"Metrics ({len(info['metrics'])}):")
    for m in info["metrics"]:
        better = "higher" if m["higher_is_better"] else "lower"
        lines.append(f"  {m['name']:<22} [{m['unit']}] {better} is better; "
                     f"from {_origin(m['origin'])}")
        if m["description"]:
            lines.append(f"  {'':<22} {m['description']}")
    lines.append(f"Sinks ({len(info['sinks'])}):")
    for s in info["sinks"]:
        lines.append(f"  {s['name']:<22} {s['description']}")
        lines.append(f"  {'':<22} from {_origin(s['origin'])}")
    if info["disabled"]:
        lines.append(f"Disabled: {', '.join(info['disabled'])}")
    if info["failures"]:
        lines.append(f"Failed plugins ({len(info['failures'])}):")
        for f in info["failures"]:
            lines.append(f"  {f['plugin']} ({f['stage']}): {f['message']}")
    return lines


def run(args: argparse.Namespace) -> int:
    info = describe(get_plugins())
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    return 1 if info["failures"] else 0

