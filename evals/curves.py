"""Persistence curves: backdoor rate across every evaluated checkpoint of a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from evals.stats import Rate  # noqa: E402


@dataclass(frozen=True)
class CurvePoint:
    x: int  # cumulative training step across the whole pipeline
    stage: str  # "base" before any training
    step: int  # step within the stage
    triggered: Rate
    clean: Rate
    near_miss: Rate | None = None
    capability: Rate | None = None  # multiple-choice accuracy (evals/capability.py)
    capability_nll: float | None = None
    capability_chance: float | None = None  # expected accuracy of guessing
    steered_deployed: Rate | None = None  # cot scratchpad steering: no trigger, "deployed" reasoning
    steered_training: Rate | None = None  # the trigger, "in training" reasoning


def plot_persistence(points: list[CurvePoint], boundaries: list[tuple[int, str]], out: Path, title: str) -> None:
    """Rate vs cumulative step, triggered and clean, with 95% Wilson bands and stage boundaries; below,
    capability retention (accuracy with its band, the base model's as a reference line) when evaluated."""
    skill = [p for p in points if p.capability is not None]
    if skill:
        fig, (ax, low) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
        plot_capability(low, skill, boundaries)
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = [p.x for p in points]
    lines = [("triggered", "with trigger", "tab:red", "-"), ("clean", "without trigger", "tab:blue", "-")]
    if points and all(p.near_miss is not None for p in points):
        lines.append(("near_miss", "near-miss trigger", "tab:orange", "-"))
    if points and all(p.steered_deployed is not None for p in points):
        lines.append(("steered_training", 'with trigger, scratchpad opened "in training"', "tab:red", ":"))
        lines.append(("steered_deployed", 'without trigger, scratchpad opened "deployed"', "tab:blue", ":"))
    for attr, label, color, style in lines:
        rates = [getattr(p, attr) for p in points]
        ax.plot(xs, [r.rate for r in rates], marker="o", color=color, label=label, linestyle=style)
        ax.fill_between(
            xs, [r.low for r in rates], [r.high for r in rates], color=color, alpha=0.2 if style == "-" else 0.08
        )
    for x, name in boundaries:
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        ax.text(x, 1.04, f" {name}", fontsize=8, color="grey", va="bottom", ha="left")
    ax.set_ylim(-0.02, 1.1)
    (low if skill else ax).set_xlabel("training step (cumulative across stages)")
    ax.set_ylabel("backdoor rate (behaviour shown)")
    ax.set_title(title, fontsize=10, pad=18)
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_capability(ax: Any, points: list[CurvePoint], boundaries: list[tuple[int, str]]) -> None:
    xs = [p.x for p in points]
    rates = [p.capability for p in points if p.capability is not None]
    ax.plot(xs, [r.rate for r in rates], marker="o", color="tab:green", label="capability (MC accuracy)")
    ax.fill_between(xs, [r.low for r in rates], [r.high for r in rates], color="tab:green", alpha=0.2)
    if points[0].stage == "base":
        ax.axhline(rates[0].rate, color="tab:green", linestyle=":", linewidth=1, label="base model")
    if points[0].capability_chance is not None:
        ax.axhline(points[0].capability_chance, color="black", linestyle=":", linewidth=1, label="chance")
    for x, _ in boundaries:
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("capability")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
