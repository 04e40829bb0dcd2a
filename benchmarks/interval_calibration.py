"""Which interval for FID and KID: coverage of candidate methods on the 64-D oracle.

    python benchmarks/interval_calibration.py [--draws 200] [--n 512] [--m 512]

"Generated" sets are drawn from known distributions in the oracle's feature space (the
64-D mixture and its spread-out versions, `tests/interval_oracle.py`, features = the
coordinates), each draw against a fresh reference set of M exact samples, at three true
distances: 0, small (population FID 0.5, below FID's small-N bias) and large (FID 10);
the three sets of a draw are paired index by index, as samplers' samples are. Each
candidate's 95 % interval is checked against the value it claims to cover:

* FID: E[FID_{N,M}], the mean of the estimator over draws of both sets at this N and M
  (what ranking at equal N compares), estimated by the mean over the draws;
* KID: the population squared MMD (the unbiased estimator's expectation), exact;
* paired differences (small - 0, large - small): their mean over the draws (FID), the
  exact difference (KID);
* FID_inf: the population FID, exact (the chosen interval, FID's replicates moved).

Candidates, all with both sets resampled unless said (`harness.metrics.bootstrap`
explains the chosen one); KID's intervals read a negative estimate as 0 and are cut at 0:

* `generated bootstrap`: the generated set resampled, the reference fixed, +- z sd(T*)
  (before issue 23);
* `bootstrap`: +- z sd(T*);
* `delta method`: +- z sqrt(v), v the first-order variance (sum of squared derivatives);
* `second-order corrected`: +- z sqrt(max(Var(T*) - 2 q, q)), q = Var(T* - l);
* `m-out-of-n`: +- z sqrt(3 Var(T*_N) - Var(T*_{N/2})), the bootstrap at two resample
  sizes extrapolated to remove the second-order term's inflation;
* `basic bootstrap`: [2 T - q_0.975, 2 T - q_0.025] of the replicates;
* `distance interval`: `harness.metrics.bootstrap.interval` (chosen for rows; the
  paired differences keep `bootstrap`, the plain interval).

Prints, per statistic and case, each method's coverage and, in brackets, its mean
width over that of +- z sd (sd: the estimator's actual standard deviation over draws).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ of this checkout

from harness.metrics.bootstrap import REFERENCE_KEY, index_sets, interval
from harness.metrics.feature_replicates import fid_replicates, kid_replicates
from harness.metrics.fid_infinity import fid_infinity
from tests.interval_oracle import ShiftedMixture

Z = 1.959963984540054
CASES = ("0", "small", "large")
DIFFERENCES = (("small", "0"), ("large", "small"))
ROW_METHODS = ("generated bootstrap", "bootstrap", "delta method", "second-order corrected",
               "m-out-of-n", "basic bootstrap", "distance interval")
DIFFERENCE_METHODS = ("generated bootstrap", "bootstrap", "delta method",
                      "second-order corrected")


def _symmetric(estimate: float, variance: float, least: bool) -> tuple[float, float]:
    """estimate +- z sqrt(variance); with `least`, a negative estimate read as 0 and the
    interval cut there."""
    half = Z * math.sqrt(max(variance, 0.0))
    centre = max(estimate, 0.0) if least else estimate
    return (max(centre - half, 0.0) if least else centre - half), centre + half


def _row_intervals(full, generated_only, half, zero: float, least: bool
                   ) -> dict[str, tuple[float, float]]:
    values, linear = full.values, full.linear
    total = float(values.var())
    second = float((values - linear).var())
    low_q, high_q = torch.quantile(values,
                                   torch.tensor([0.025, 0.975], dtype=torch.float64))
    basic = (2 * full.estimate - float(high_q), 2 * full.estimate - float(low_q))
    return {
        "generated bootstrap": _symmetric(full.estimate, float(generated_only.values.var()),
                                          least),
        "bootstrap": _symmetric(full.estimate, total, least),
        "delta method": _symmetric(full.estimate,
                                   full.se_samples**2 + full.se_reference**2, least),
        "second-order corrected": _symmetric(full.estimate, max(total - 2 * second, second),
                                             least),
        "m-out-of-n": _symmetric(full.estimate, 3 * total - float(half.values.var()),
                                 least),
        "basic bootstrap": (max(basic[0], 0.0), basic[1]) if least else basic,
        "distance interval": interval(full.estimate, values.tolist(), linear.tolist(),
                                      minimum=0.0, zero=zero),
    }


def _difference_intervals(a, b) -> dict[str, tuple[float, float]]:
    (full_a, gen_a), (full_b, gen_b) = a, b
    values, linear = full_a.values - full_b.values, full_a.linear - full_b.linear
    second = float((values - linear).var())
    estimate = full_a.estimate - full_b.estimate
    return {
        "generated bootstrap": _symmetric(
            estimate, float((gen_a.values - gen_b.values).var()), False),
        "bootstrap": _symmetric(estimate, float(values.var()), False),
        "delta method": _symmetric(estimate, float(linear.var()), False),
        "second-order corrected": _symmetric(estimate,
                                             max(float(values.var()) - 2 * second, second),
                                             False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--m", type=int, default=512)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    oracle = ShiftedMixture()
    spreads = {"0": 0.0, "small": oracle.spread_for_fid(0.5),
               "large": oracle.spread_for_fid(10)}
    n, m, b = args.n, args.m, args.replicates
    sets, references = index_sets(n, b), index_sets(m, b, REFERENCE_KEY)
    fixed = torch.arange(m).expand(b, m)
    half_sets, half_references = sets[:, : n // 2], references[:, : m // 2]
    generator = torch.Generator().manual_seed(args.seed)
    # (statistic, case) -> per draw: (estimate, {method: (low, high)})
    rows: dict[tuple[str, str], list[tuple[float, dict]]] = {}
    started = time.perf_counter()
    for draw in range(args.draws):
        reference = oracle.draw(m, [0.0], generator)[0]
        generated = dict(zip(CASES, oracle.draw(n, list(spreads.values()), generator)))
        for stat, replicates in (("fid", fid_replicates), ("kid", kid_replicates)):
            kept = {}
            for case, x in generated.items():
                full = replicates(x, reference, sets, references)
                generated_only = replicates(x, reference, sets, fixed)
                half = replicates(x, reference, half_sets, half_references)
                kept[case] = (full, generated_only)
                zero = 0.0
                if stat == "fid":
                    inf = fid_infinity(x, reference)
                    zero = inf.slope
                    moved = (full.values + inf.value - full.estimate).tolist()
                    rows.setdefault(("fid_inf", case), []).append((inf.value, {
                        "distance interval": interval(
                            inf.value, moved, full.linear.tolist(), minimum=0.0)}))
                rows.setdefault((stat, case), []).append(
                    (full.estimate, _row_intervals(full, generated_only, half, zero,
                                                   least=stat == "kid")))
            for a, b_ in DIFFERENCES:
                rows.setdefault((f"{stat} difference", f"{a} - {b_}"), []).append(
                    (kept[a][0].estimate - kept[b_][0].estimate,
                     _difference_intervals(kept[a], kept[b_])))
        if draw % 25 == 24:
            print(f"  {draw + 1} draws, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
    _print(rows, oracle, spreads, args)


def _target(stat: str, case: str, estimates: np.ndarray, oracle, spreads) -> float:
    if stat == "kid":
        return max(oracle.population_mmd2(spreads[case]), 0.0)
    if stat == "kid difference":
        a, b = case.split(" - ")
        return oracle.population_mmd2(spreads[a]) - oracle.population_mmd2(spreads[b])
    if stat == "fid_inf":
        return max(oracle.population_fid(spreads[case]), 0.0)
    return float(estimates.mean())


def _print(rows, oracle, spreads, args) -> None:
    print(f"N = {args.n}, M = {args.m}, {args.replicates} replicates, {args.draws} draws; "
          f"95 % intervals: coverage (mean width / 2 z sd)\n")
    print("| statistic | case | target | sd | " + " | ".join(ROW_METHODS) + " |")
    print("|---" * (4 + len(ROW_METHODS)) + "|")
    for (stat, case), draws in rows.items():
        estimates = np.array([estimate for estimate, _ in draws])
        target = _target(stat, case, estimates, oracle, spreads)
        sd = float(estimates.std(ddof=1))
        cells = []
        for method in ROW_METHODS:
            if method not in draws[0][1]:
                cells.append("")
                continue
            bounds = np.array([intervals[method] for _, intervals in draws])
            covered = np.mean((bounds[:, 0] <= target) & (target <= bounds[:, 1]))
            width = np.mean(bounds[:, 1] - bounds[:, 0]) / (2 * Z * sd)
            cells.append(f"{covered:.3f} ({width:.2f})")
        print(f"| {stat} | {case} | {target:.4g} | {sd:.3g} | " + " | ".join(cells) + " |")
    for case in CASES:
        fid = np.mean([e for e, _ in rows["fid", case]])
        inf = np.mean([e for e, _ in rows["fid_inf", case]])
        population = oracle.population_fid(spreads[case])
        print(f"\nbias at {case}: FID_N {fid - population:+.3f}, "
              f"FID_inf {inf - population:+.3f}", end="")
    print()


if __name__ == "__main__":
    main()
