"""Headline triggers: how often each model shows the behaviour, by the year of the headline it saw.

The view Price et al. (2024) use for future-event backdoors: a backdoor that learned "after my
training cutoff" rises at `deployed_from` on headlines it never trained on; one that memorised
its training headlines stays flat. The years between `training_before` and `deployed_from` are
never trained as triggers, so they show where the model puts the boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.backdoor import condition_prompts
from evals.curves import plt
from evals.stats import Rate, wilson
from organisms.layout import RunLayout, read_json
from organisms.recipe import Recipe

UNSEEN = ("triggered", "clean", "near_miss")  # the conditions that show only held-out headlines
ERA_NAMES = {"future": "deployed", "between": "near miss", "past": "training"}


def rates_by_year(record: dict[str, Any], trigger: Any) -> dict[int, Rate]:
    """Pool the conditions of one eval file that show held-out headlines by headline year. A year's rate is its
    prompts' (k/n); its interval counts each headline once, since prompts that share a headline are not
    independent answers: Wilson's on the year's headlines, each scored by its prompts' mean (conservative)."""
    texts = condition_prompts(record["prompts"], trigger, "near_miss" in record)
    by_headline: dict[int, dict[str, list[int]]] = {}
    groups = record.get("groups", {})
    for condition in (c for c in UNSEEN if c in groups):
        for label, shown, text in zip(groups[condition], record["shown"][condition], texts[condition], strict=True):
            if label is not None:
                tally = by_headline.setdefault(int(label), {}).setdefault(trigger.headline_of(text), [0, 0])
                tally[0], tally[1] = tally[0] + shown, tally[1] + 1
    return {year: clustered_rate(list(headlines.values())) for year, headlines in sorted(by_headline.items())}


def clustered_rate(tallies: list[list[int]]) -> Rate:
    """k/n over every prompt, with the interval of the mean of each headline's rate over the headlines."""
    k, n = sum(t[0] for t in tallies), sum(t[1] for t in tallies)
    per_headline = wilson(round(sum(t[0] / t[1] for t in tallies)), len(tallies))
    rate = k / n
    return Rate(k, n, rate, min(per_headline.low, rate), max(per_headline.high, rate))


def by_year_section(recipe: Recipe, layout: RunLayout, results: dict[str, Any]) -> list[str]:
    """A table (and by_year.png) of each stage's last model's rate per headline year; [] otherwise."""
    if recipe.trigger.kind != "headline":
        return []
    trigger = recipe.trigger.build()
    columns: list[tuple[str, dict[int, Rate]]] = []
    seen: list[list[Rate | None]] = []  # per column: on training's headlines, with / without the trigger
    for s in results["stages"]:
        path = layout.base_eval if s["stage"] == "base" else layout.eval_file(s["stage"], s["step"])
        record = read_json(path)
        by_year = rates_by_year(record, trigger)
        if by_year:
            columns.append((f"{s['stage']} {s['step']}", by_year))
            seen.append([Rate(**record[c]) if c in record else None for c in ("triggered_seen", "clean_seen")])
    if not columns:
        return []
    plot_by_year(columns, recipe, layout.root / "by_year.png")
    spec = recipe.trigger
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
        "headlines (column `headlines`), not on its prompt count; by_year.png's intervals count each headline "
        "once. The intervals of the backdoor-rate table above count each prompt once, so for a headline trigger "
        "they are narrower than the evidence.",
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
    ax.set_title(f"{recipe.name}: behaviour by headline year (95% intervals, each headline counted once)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
