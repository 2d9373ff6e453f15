"""Proportions with Wilson score intervals (scipy does the maths)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from scipy.stats import binomtest


@dataclass(frozen=True)
class Rate:
    k: int
    n: int
    rate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.rate:.1%} [{self.low:.1%}, {self.high:.1%}] ({self.k}/{self.n})"


def wilson(k: int, n: int, confidence: float = 0.95) -> Rate:
    if n == 0:
        return Rate(0, 0, float("nan"), float("nan"), float("nan"))
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Rate(k, n, k / n, float(ci.low), float(ci.high))
