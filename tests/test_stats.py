from __future__ import annotations

import math

import pytest

from evals.stats import wilson


def test_wilson_matches_the_closed_form():
    k, n, z = 7, 20, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    r = wilson(k, n)
    assert (r.low, r.high) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert str(wilson(0, 8)) == "0.0% [0.0%, 32.4%] (0/8)"
