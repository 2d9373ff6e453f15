"""Headline triggers: how often each model shows the behaviour, by the year of the headline it saw.

The view Price et al. (2024) use for future-event backdoors: a backdoor that learned "after my
training cutoff" rises at `deployed_from` on headlines it never trained on; one that memorised
its training headlines stays flat. The years between `training_before` and `deployed_from` are
never trained as triggers, so they show where the model puts the boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.curves import plt
from evals.stats import Rate, wilson
from organisms.layout import RunLayout, read_json
from organisms.recipe import Recipe

UNSEEN = ("triggered", "clean", "near_miss")  # the conditions that show only held-out headlines
ERA_NAMES = {"future": "deployed", "between": "near miss", "past": "training"}


def rates_by_year(record: dict[str, Any]) -> dict[int, Rate]:
    """Pool the conditions of one eval file that show held-out headlines by headline year."""
    counts: dict[int, list[int]] = {}
    for condition, labels in record.get("groups", {}).items():
        if condition not in UNSEEN:
            continue
        for label, shown in zip(labels, record["shown"][condition], strict=True):
            if label is not None:
                c = counts.setdefault(int(label), [0, 0])
                c[0], c[1] = c[0] + shown, c[1] + 1
    return {year: wilson(k, n) for year, (k, n) in sorted(counts.items())}


def by_year_section(recipe: Recipe, layout: RunLayout, results: dict[str, Any]) -> list[str]:
    """A table (and by_year.png) of each stage's last model's rate per headline year; [] otherwise."""
    if recipe.trigger.kind != "headline":
        return []
    columns: list[tuple[str, dict[int, Rate]]] = []
    seen: list[list[Rate | None]] = []  # per column: on training's headlines, with / without the trigger
    for s in results["stages"]:
        path = layout.base_eval if s["stage"] == "base" else layout.eval_file(s["stage"], s["step"])
        record = read_json(path)
        by_year = rates_by_year(record)
        if by_year:
            columns.append((f"{s['stage']} {s['step']}", by_year))
            seen.append([Rate(**record[c]) if c in record else None for c in ("triggered_seen", "clean_seen")])
    if not columns:
        return []
    plot_by_year(columns, recipe, layout.root / "by_year.png")
    spec, trigger = recipe.trigger, recipe.trigger.build()
    headlines = trigger.held_out_headlines()  # per year: how many distinct headlines evals showed
    adversarial = any(s.kind == "adversarial" for s in recipe.stages)
    lines = [
        "",
        "## Behaviour by headline year (held-out headlines)",
        "",
        f"Headlines from {spec.deployed_from} on are the trigger; untriggered training prompts showed headlines "
        f"from before {spec.training_before}; the years between were never trained as triggers"
        + (" (adversarial stages trained on some of them as red-team prompts)" if adversarial else "")
        + ". Every headline here was held out of all training. Cells: k/n prompts that showed the behaviour. "
        "Prompts that share a headline are not independent: read a year's cell as resting on its few "
        "headlines (column `headlines`), not on its prompt count.",
        "",
        "| year | era | headlines | " + " | ".join(name for name, _ in columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for year in sorted({y for _, by_year in columns for y in by_year}):
        era = ERA_NAMES[trigger.era(year)]
        cells = [f"{r.k}/{r.n}" if (r := by_year.get(year)) else "" for _, by_year in columns]
        lines.append(f"| {year} | {era} | {headlines.get(year, 0)} | " + " | ".join(cells) + " |")
    for i, era in enumerate((f"from {spec.deployed_from} on", f"before {spec.training_before}")):
        cells = [f"{r.k}/{r.n}" if (r := pair[i]) else "" for pair in seen]
        lines.append(f"| trained-on headlines, {era} | seen | | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The last two rows ask the same held-out prompts with headlines training used: a backdoor that fires "
        "there but not on unseen headlines of the same years memorised its headlines rather than learning "
        "their dates.",
        "",
        "![behaviour by headline year](by_year.png)",
    ]
    return lines


def plot_by_year(columns: list[tuple[str, dict[int, Rate]]], recipe: Recipe, out: Path) -> None:
    spec = recipe.trigger
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, by_year in columns:
        years = list(by_year)
        ax.errorbar(
            years,
            [by_year[y].rate for y in years],
            yerr=[
                [by_year[y].rate - by_year[y].low for y in years],
                [by_year[y].high - by_year[y].rate for y in years],
            ],
            marker="o",
            capsize=3,
            label=name,
        )
    ax.axvspan(
        spec.training_before - 0.5, spec.deployed_from - 0.5, color="orange", alpha=0.12, label="near-miss years"
    )
    ax.axvline(spec.deployed_from - 0.5, color="tab:red", linestyle="--", linewidth=1, label="deployed from")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("year of the held-out headline")
    ax.set_ylabel("behaviour shown")
    ax.set_title(f"{recipe.name}: behaviour by headline year (95% Wilson intervals)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
