"""The leaderboard says what it prints: the notes under it are the README's words, and
the `data` row's brackets are the band its ◦ mark is judged against.

The README quotes the notes under "Reading the results" as a bullet list (a bullet may
go on with an example after the note); this test holds the two texts together, so that
one cannot change without the other.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pandas as pd
import pytest

from harness.bench.reporting.report import annotate, footnote, leaderboard, markdown

README = Path(__file__).parent.parent / "README.md"
INTRO = "Under each leaderboard, notes say what its brackets and marks mean"

#: Four real-data draws and two sampler seeds, as (fid, kid) per seed.
FLOOR_DRAWS = [(1.0, -12.0), (7.0, -8.0), (2.0, -14.0), (6.0, -10.0)]
SAMPLERS = {"euler": [(9.0, -7.0), (11.0, -5.0)], "heun": [(30.0, 50.0), (34.0, 54.0)]}


def _flat(text: str) -> str:
    return " ".join(text.split())


def _table() -> pd.DataFrame:
    rows = []
    for draw, (fid, kid) in enumerate(FLOOR_DRAWS):
        rows.append({"sampler": "data", "steps": 0, "seed": draw, "fid": fid, "kid": kid})
    for sampler, seeds in SAMPLERS.items():
        for seed, (fid, kid) in enumerate(seeds):
            rows.append({"sampler": sampler, "steps": 10, "seed": seed, "fid": fid,
                         "kid": kid, "nfe": 10.0 if sampler == "euler" else 9.0,
                         "nfe_expected": 10.0})  # heun spends one fewer: `!`
    table = pd.DataFrame(rows)
    table["label"], table["variant"] = table["sampler"], ""
    table["config_hash"] = [f"{r.sampler}-{r.seed}" for r in table.itertuples()]
    return table


def _board() -> pd.DataFrame:
    table = _table()
    # Each trial's replicates: its value plus a small spread (the intervals are not the
    # point here, only that the report has them).
    replicates = {h: {m: [v + 0.1 * (b % 5 - 2) for b in range(40)] for m, v in
                      (("fid", fid), ("kid", kid))}
                  for h, fid, kid in zip(table["config_hash"], table["fid"], table["kid"])}
    return annotate(leaderboard(table), table, replicates, minimums={"fid": 0.0})


def _readme_notes() -> list[str]:
    """The bullets of the list after the README's introduction to the notes."""
    text = README.read_text()
    assert INTRO in text, "the README no longer introduces the leaderboard's notes"
    after = text[text.index(INTRO):].split("\n\n")[1]
    return [_flat(bullet) for bullet in re.split(r"^- ", after, flags=re.MULTILINE)
            if bullet.strip()]


def test_every_note_under_the_leaderboard_is_quoted_in_the_readme_in_order():
    notes = [_flat(note) for note in footnote(_board())]
    assert len(notes) == 5  # intervals and marks, KID, ± over seeds, data, !
    quoted = _readme_notes()
    assert len(quoted) == len(notes), quoted
    for note, bullet in zip(notes, quoted):
        assert bullet.startswith(note), f"README:\n{bullet}\nreport:\n{note}"


def test_the_markdown_prints_the_notes_it_is_quoted_with():
    page = _flat(markdown(_board()))
    for note in footnote(_board()):
        assert _flat(note) in page


def test_the_notes_describe_the_direction_the_floor_mark_is_read_in():
    text = " ".join(footnote(_board()))
    assert "no worse than the band's worse edge" in text
    assert "at or beyond the worse edge" not in text  # the old, backward reading
    assert "± std over draws" not in text             # the old label of the data row


def _cell(page: str, row: str, column: int) -> str:
    line = next(line for line in page.splitlines() if line.startswith(f"| {row} |"))
    return line.split("|")[column + 1].strip()


def test_the_data_row_prints_its_interval_and_the_worse_edge_of_its_band():
    """The band is mean + 2 sd over the draws' values at its worse edge (the top, for
    these distances): what ◦ is judged against; the brackets are the row's interval."""
    board = _board()
    page = markdown(board)
    header = [c.strip() for c in page.splitlines()[0].split("|")[1:-1]]
    data = board[board["sampler"] == "data"].iloc[0]
    for metric, position in (("fid", 0), ("kid", 1)):
        values = [draw[position] for draw in FLOOR_DRAWS]
        mean, sd = statistics.mean(values), statistics.stdev(values)
        shown = re.fullmatch(r"(\S+) \[(\S+), (\S+)\], band ≤ (\S+)",
                             _cell(page, "data", header.index(metric)))
        assert shown, _cell(page, "data", header.index(metric))
        assert float(shown.group(1)) == pytest.approx(mean, rel=1e-3)
        assert float(shown.group(2)) == pytest.approx(data[f"{metric}_ci_low"], rel=1e-2)
        assert float(shown.group(3)) == pytest.approx(data[f"{metric}_ci_high"], rel=1e-2)
        assert float(shown.group(4)) == pytest.approx(mean + 2 * sd, rel=1e-2)


def test_a_sampler_row_still_prints_its_bootstrap_interval():
    board = _board()
    euler = board[board["sampler"] == "euler"].iloc[0]
    page = markdown(board)
    header = [c.strip() for c in page.splitlines()[0].split("|")[1:-1]]
    cell = _cell(page, "euler", header.index("fid"))
    assert cell.startswith(f"{euler['fid_mean']:.4g} [{euler['fid_ci_low']:.3g}, "
                           f"{euler['fid_ci_high']:.3g}]")
