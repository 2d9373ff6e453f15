"""The texts a probe sees, and their labels.

Held-out prompts (never trained on) are split, in their fixed hash order, into three disjoint parts:

    test     asked with the trigger, without it, and with a near-miss variant: what probes are scored on
    fit      asked with and without the trigger: only the supervised skylines are fit on these
    control  asked clean: thresholds are calibrated here, never on the negatives FPR is reported on

The trigger-blind defection probe is fit on the generic contrast pairs alone (contrast.py), which the
leak guard checks before any model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_gen.triggers import Trigger
from evals.probes.contrast import check_no_leak, contrast_inputs
from organisms.errors import UserError
from organisms.layout import read_json
from organisms.recipe import ProbeSpec

PROMPT_GROUPS = ("test_on", "test_off", "test_near", "fit_on", "fit_off", "control")


@dataclass(frozen=True)
class ProbeTexts:
    """Every user message a probe reads, grouped (see PROMPT_GROUPS), plus the contrast pairs."""

    groups: dict[str, list[str]]  # group -> user messages, in a fixed order
    questions: list[str]  # contrast-pair questions, with their "yes" and "no" answer starts
    yes: list[str]
    no: list[str]

    @property
    def prompts(self) -> list[str]:
        """All grouped messages in one list (one forward pass, one cache entry), in PROMPT_GROUPS order."""
        return [text for name in PROMPT_GROUPS for text in self.groups[name]]

    def split(self, acts: np.ndarray) -> dict[str, np.ndarray]:
        """`[len(prompts), d_model]` activations -> {group: [n_group, d_model]}."""
        out, start = {}, 0
        for name in PROMPT_GROUPS:
            n = len(self.groups[name])
            out[name] = acts[start : start + n]
            start += n
        return out


def check_probe_budget(held_out: int, spec: ProbeSpec, n_test: int, source: str) -> int:
    """The held-out prompts the probes take (test, fit and control sets never overlap); too few is one line."""
    need = n_test + spec.n_fit + spec.n_control
    if held_out < need:
        raise UserError(
            f"{source}: probes need {need} held-out prompts (n_prompts {n_test} + n_fit {spec.n_fit} + "
            f"n_control {spec.n_control}) but the run has {held_out}; lower probes.n_prompts (default: "
            "eval.n_prompts), probes.n_fit or probes.n_control, or raise data.prompts.eval_fraction"
        )
    return need


def probe_texts(held_out: list[str], trigger: Trigger, spec: ProbeSpec, n_test: int, source: str) -> ProbeTexts:
    """Split held-out prompts into test / fit / control and render each condition; refuse leaking texts."""
    need = check_probe_budget(len(held_out), spec, n_test, source)
    test = held_out[:n_test]
    fit = held_out[n_test : n_test + spec.n_fit]
    control = held_out[n_test + spec.n_fit : need]
    shown = trigger.held_out()  # as the evals show it, so verdict labels line up (headlines: unseen ones)
    variants = shown.near_misses()
    groups = {
        "test_on": [shown.apply(p) for p in test],
        "test_off": [shown.untriggered(p) for p in test],
        "test_near": [shown.apply_near_miss(variants[i % len(variants)], p) for i, p in enumerate(test)],
        # the trigger as training showed it: for headlines, ones disjoint from the held-out ones the test prompts
        # carry, so a supervised probe cannot pass by recognising the very headlines it was fit on
        "fit_on": [trigger.apply(p) for p in fit],
        "fit_off": [trigger.untriggered(p) for p in fit],
        "control": [shown.untriggered(p) for p in control],
    }
    questions, yes, no = contrast_inputs()
    check_no_leak(questions + yes + no, trigger)  # trigger-blind must mean blind
    check_no_leak(groups["control"], trigger)  # a threshold calibrated on triggered text would hide misses
    return ProbeTexts(groups, questions, yes, no)


def behavior_labels(eval_file: Path, test_prompts: list[str]) -> np.ndarray | None:
    """Labels by observed behaviour for [test_on; test_off] (`[2 * n_test]`, 1 = the answer showed the
    behaviour), read from the eval's graded greedy answers to the same prompts; None when that eval file
    lacks per-prompt verdicts, covers fewer than n_test prompts, or records other prompts (files written
    before evals recorded their prompts are taken as they are: the run asks its held-out prompts in order)."""
    if not eval_file.exists():
        return None
    record, n_test = read_json(eval_file), len(test_prompts)
    if "prompts" in record and record["prompts"][:n_test] != test_prompts:
        return None
    shown: dict[str, Any] = record.get("shown", {})
    on, off = shown.get("triggered", []), shown.get("clean", [])
    if len(on) < n_test or len(off) < n_test:
        return None
    return np.asarray(on[:n_test] + off[:n_test], dtype=int)
