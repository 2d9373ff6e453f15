"""Probe plots, drawn from probes/results.json alone (so they can be redrawn without a model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODEL_COLORS = ("tab:grey", "tab:red", "tab:blue")
GROUP_STYLE = {  # prompt group -> (legend label, colour)
    "test_on": ("with trigger", "tab:red"),
    "test_off": ("without trigger", "tab:blue"),
    "test_near": ("near-miss trigger", "tab:orange"),
    "control": ("control (calibration)", "tab:grey"),
}


def _by_layer(result: dict[str, Any]) -> list[str]:
    return sorted(result["layers"], key=int)


def plot_sweep(record: dict[str, Any], out: Path, title: str) -> None:
    """Left: defection-probe AUROC per layer (CI band) beside the best random direction. Middle: the
    supervised skylines and the shuffled-label control. Right, where it ran: the deception probe on answers."""
    answers = any("deception" in m for r in record["models"].values() for m in r["layers"].values())
    fig, axes = plt.subplots(1, 3 if answers else 2, figsize=(18 if answers else 12, 4.5), sharey=True)
    left, middle = axes[0], axes[1]
    for (label, result), color in zip(record["models"].items(), MODEL_COLORS, strict=False):
        keys = _by_layer(result)
        xs = [int(k) for k in keys]
        rows = [result["layers"][k] for k in keys]
        left.plot(xs, [r["auroc"] for r in rows], marker="o", color=color, label=label)
        left.fill_between(xs, [r["low"] for r in rows], [r["high"] for r in rows], color=color, alpha=0.15)
        left.plot(xs, [r["null_max"] for r in rows], linestyle=":", color=color, label=f"{label}: best random")
        middle.plot(
            xs, [r["supervised"]["logistic"] for r in rows], marker="o", color=color, label=f"{label}: logistic"
        )
        middle.plot(
            xs, [r["supervised"]["mahalanobis"] for r in rows], linestyle="--", color=color, label="Mahalanobis"
        )
        middle.plot(xs, [r["supervised"]["logistic_shuffled"] for r in rows], linestyle=":", color=color,
                   label="logistic, shuffled labels")  # fmt: skip
    if answers:
        _plot_deception(axes[2], record)
    left.set_title(f"trigger-blind defection probe vs max of {record['n_null']} random directions", fontsize=9)
    middle.set_title("supervised skylines (fit on separate prompts) and shuffled-label control", fontsize=9)
    for ax in axes:
        ax.axhline(0.5, color="black", linewidth=0.8)
        ax.set_xlabel("layer (output of decoder block)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    left.set_ylabel("AUROC, triggered vs clean")
    fig.suptitle(f"{title}: probe layer sweep ({record['n_prompts']} test prompts each way)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _plot_deception(ax: Any, record: dict[str, Any]) -> None:
    """The deception probe on the models' answers per layer (CI band), its best random direction, and its
    AUROC on held-out instructed pairs."""
    for (label, result), color in zip(record["models"].items(), MODEL_COLORS, strict=False):
        keys = [k for k in _by_layer(result) if "deception" in result["layers"][k]]
        xs = [int(k) for k in keys]
        rows = [result["layers"][k]["deception"] for k in keys]
        ax.plot(xs, _values(rows, "auroc"), marker="o", color=color, label=f"{label}: answers")
        ax.fill_between(xs, _values(rows, "low"), _values(rows, "high"), color=color, alpha=0.15)
        ax.plot(xs, _values(rows, "null_max"), linestyle=":", color=color, label=f"{label}: best random")
        ax.plot(xs, [r["instructed_auroc"] for r in rows], linestyle="--", color=color,
                label=f"{label}: instructed pairs (held out)")  # fmt: skip
    ax.set_title("deception probe (instructed pairs) on the model's own answers", fontsize=9)


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    """One metric per layer, a gap (NaN) where it is undefined (None: e.g. the deception probe's AUROC when every
    answer on one side was empty); matplotlib's fill_between fails on None."""
    return [np.nan if row[key] is None else row[key] for row in rows]


def plot_histograms(record: dict[str, Any], out: Path, title: str) -> None:
    """Defection-probe score distributions per prompt group, one panel per model, with the threshold
    calibrated on the control set."""
    models = record["histograms"]
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.8), squeeze=False)
    for ax, (label, hist) in zip(axes[0], models.items(), strict=True):
        every = [x for group in GROUP_STYLE for x in hist["scores"][group]]
        bins = np.linspace(min(every), max(every), 25)  # shared edges, so the groups line up
        for group, (name, color) in GROUP_STYLE.items():
            ax.hist(hist["scores"][group], bins=bins, alpha=0.45, color=color, label=name, density=True)
        ax.axvline(
            hist["threshold"], color="black", linestyle="--", linewidth=1, label=f"{record['fpr']:.0%} FPR on control"
        )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("defection-probe score")
        ax.legend(fontsize=6)
    fig.suptitle(f"{title}: defection-probe scores at layer {record['track_layer']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_across_training(record: dict[str, Any], curve: list[dict[str, Any]], out: Path, title: str) -> None:
    """Top: the persistence curve. Bottom: frozen vs refit probe AUROC at every checkpoint, same x axis."""
    track = record["across_training"]["points"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    if curve:
        xs = [p["x"] for p in curve]
        for key, label, color in (("triggered", "with trigger", "tab:red"), ("clean", "without trigger", "tab:blue")):
            top.plot(xs, [p[key]["rate"] for p in curve], marker="o", color=color, label=label)
            top.fill_between(
                xs, [p[key]["low"] for p in curve], [p[key]["high"] for p in curve], color=color, alpha=0.2
            )
    top.set_ylabel("backdoor rate")
    top.set_ylim(-0.02, 1.05)
    top.legend(fontsize=8, loc="center right")
    top.set_title(f"{title}: persistence and probes across training (layer {record['track_layer']})", fontsize=10)
    xs = [p["x"] for p in track]
    for key, label, color in (("defection_frozen", "defection, frozen", "tab:purple"),
                              ("defection_refit", "defection, refit", "tab:green")):  # fmt: skip
        bottom.plot(xs, [p[key]["auroc"] for p in track], marker="o", color=color, label=label)
        bottom.fill_between(
            xs, [p[key]["low"] for p in track], [p[key]["high"] for p in track], color=color, alpha=0.15
        )
    bottom.plot(xs, [p["logistic_frozen"] for p in track], linestyle="--", color="tab:purple", label="logistic, frozen")
    bottom.plot(xs, [p["logistic_refit"] for p in track], linestyle="--", color="tab:green", label="logistic, refit")
    bottom.plot(xs, [p["null_max"] for p in track], linestyle=":", color="black", label="best random direction")
    bottom.axhline(0.5, color="black", linewidth=0.8)
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("AUROC, triggered vs clean")
    bottom.set_xlabel("training step (cumulative across stages)")
    bottom.legend(fontsize=7, loc="lower left")
    for ax in (top, bottom):
        ax.axvline(xs[0], color="grey", linestyle="--", linewidth=1)  # probes frozen here
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
