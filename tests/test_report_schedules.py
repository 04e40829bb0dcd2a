"""A report of several time schedules draws each vs-NFE plot once per schedule: every
figure holds exactly its schedule's rows (and the real-data floor), names samplers
without the schedule its title already says, and lands in a file named after it; a
report of one schedule keeps the plain file names the committed results use."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from harness.bench.reporting import plots
from harness.bench.reporting.report import Results, schedule_file_tags, write_report

SAMPLERS = ("euler", "dpmpp_2m")
STEPS = (4, 8)


def _fid(sampler: str, schedule: str, steps: int) -> float:
    """Distinct per row, so that a point on a figure tells which row it came from."""
    return 100.0 / steps + SAMPLERS.index(sampler) + (0.5 if schedule == "log_snr" else 0.0)


def _records(schedules: tuple[str, ...]) -> list[dict]:
    records = []
    for schedule in schedules:
        for sampler in SAMPLERS:
            for steps in STEPS:
                records.append({
                    "kind": "trial", "status": "FINISHED", "sampler": sampler,
                    "variant": "", "schedule": schedule, "steps": steps, "seed": 0,
                    "name": f"{sampler}-{schedule}-{steps}nfe-seed0",
                    "config_hash": f"{sampler}{schedule}{steps}", "num_samples": 8,
                    "ended": 1.0, "metrics": {"nfe": float(steps),
                                              "fid": _fid(sampler, schedule, steps),
                                              "ode_error": 1.0 / steps}})
    floor = {"kind": "trial", "status": "FINISHED", "sampler": "data", "variant": "",
             "steps": 0, "seed": 0, "name": "data-draw0", "config_hash": "floor",
             "num_samples": 8, "ended": 1.0, "floor": True, "metrics": {"fid": 3.0}}
    return records + [floor]


@pytest.fixture
def figures(monkeypatch):
    """File name -> (title, legend labels, label -> y values) of every figure saved."""
    seen: dict[str, tuple[str, list[str], dict[str, list[float]]]] = {}
    save = plots._save

    def recording_save(figure, path):
        axis = figure.axes[0]
        points = {c.get_label(): [float(y) for y in c.lines[0].get_ydata()]
                  for c in axis.containers}
        legend = [t.get_text() for t in axis.get_legend().get_texts()]
        seen[path.name] = (axis.get_title(), legend, points)
        return save(figure, path)

    monkeypatch.setattr(plots, "_save", recording_save)
    yield seen
    plt.close("all")


def test_each_schedule_gets_its_own_plots_holding_only_its_rows(tmp_path, figures):
    written = write_report(Results(_records(("karras", "log_snr"))), tmp_path, title="fast")
    per_schedule = {f"{metric}_vs_nfe_{schedule}.png" for metric in ("fid", "ode_error")
                    for schedule in ("karras", "log_snr")}
    assert per_schedule <= set(written.files)
    assert all((tmp_path / name).is_file() for name in per_schedule)
    assert not (tmp_path / "fid_vs_nfe.png").exists()
    for schedule in ("karras", "log_snr"):
        title, legend, points = figures[f"fid_vs_nfe_{schedule}.png"]
        assert title == f"FID vs NFE (fast, schedule {schedule})"
        assert set(points) == set(SAMPLERS)            # no "(karras)" in the legend
        assert any(label.startswith("real data") for label in legend)
        for sampler in SAMPLERS:
            assert points[sampler] == [_fid(sampler, schedule, n) for n in STEPS]


def test_one_schedule_keeps_the_plain_file_names_and_titles(tmp_path, figures):
    written = write_report(Results(_records(("karras",))), tmp_path, title="default")
    assert {"fid_vs_nfe.png", "ode_error_vs_nfe.png"} <= set(written.files)
    assert not any("karras" in name for name in written.files)
    title, _, points = figures["fid_vs_nfe.png"]
    assert title == "FID vs NFE (default)"
    assert set(points) == set(SAMPLERS)


def test_file_tags_are_safe_file_names_and_distinct():
    tags = schedule_file_tags(["karras", "karras(rho=5.0)", "log_snr"])
    assert tags == {"karras": "_karras", "karras(rho=5.0)": "_karras_rho=5.0",
                    "log_snr": "_log_snr"}
    long = "sigma_list(sigmas=[80.0, 10.0, 1.0, 0.1, 0.01, 0.002, 0.0005])"
    assert schedule_file_tags([long])[long].startswith("_sigma_list_")
    assert "/" not in schedule_file_tags(["a/b"])["a/b"]
    # Labels that differ only where a file name cannot follow them stay apart.
    assert len(set(schedule_file_tags(["x(a=1)", "x[a=1]"]).values())) == 2
