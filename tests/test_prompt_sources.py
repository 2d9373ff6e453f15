"""`load_prompts` across sources: local files, Hugging Face datasets (a local folder, offline) and hh-rlhf."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
from datasets import Dataset

from data_gen.prompts import first_human_turn, load_prompts, read_prompts
from organisms.errors import UserError
from organisms.recipe import PromptSpec

README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
  - split: test
    path: data/test-*.parquet
- config_name: hh
  data_files:
  - split: train
    path: hh/train-*.parquet
---
"""


def hh(*turns: tuple[str, str]) -> str:
    return "".join(f"\n\n{speaker}: {text}" for speaker, text in turns)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, and a private datasets cache; both libraries read these at import time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder as on the hub: a README declaring two configs, parquet data files."""
    root = tmp_path_factory.mktemp("hub") / "ds"
    for sub in ("data", "hh"):
        (root / sub).mkdir(parents=True)
    (root / "README.md").write_text(README)
    train = {"q": ["  alpha ", "beta", "alpha", "", None, "gamma"], "other": list(range(6))}
    Dataset.from_dict(train).to_parquet(root / "data" / "train-00000-of-00001.parquet")
    Dataset.from_dict({"q": ["held out", "held out"]}).to_parquet(root / "data" / "test-00000-of-00001.parquet")
    chosen = [
        hh(("Human", "How do I boil an egg?"), ("Assistant", "Simmer it."), ("Human", "How long?")),
        hh(("Human", "How do I boil an egg?"), ("Assistant", "Ten minutes.")),  # same first turn: deduped
        hh(("Assistant", "No human here.")),  # skipped
        hh(("Human", "Name a play."), ("Assistant", "Human: The Musical")),
    ]
    Dataset.from_dict({"chosen": chosen}).to_parquet(root / "hh" / "train-00000-of-00001.parquet")
    return root


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        (
            hh(("Human", "What is 2+2?"), ("Assistant", "4."), ("Human", "And 3+3?"), ("Assistant", "6.")),
            "What is 2+2?",
        ),
        ("  \n Human:   Hi there  \n\nAssistant: Hello", "Hi there"),
        ("Human: no leading blank line", "no leading blank line"),
        (hh(("Human", "Two lines:\nsecond line")), "Two lines:\nsecond line"),
        (hh(("Human", "Quote a play."), ("Assistant", "Sure. Human: to be or not")), "Quote a play."),
        (hh(("Human", "Explain the tag 'Human:' please"), ("Assistant", "ok")), "Explain the tag 'Human:' please"),
        (hh(("Assistant", "Hello."), ("Human", "Late question"), ("Assistant", "x")), "Late question"),
        (hh(("Assistant", "I said Human: once.")), None),
        ("", None),
        ("plain text, no speakers", None),
    ],
)
def test_first_human_turn(transcript: str, expected: str | None) -> None:
    assert first_human_turn(transcript) == expected


def test_hf_folder_default_split_is_stripped_and_deduped(folder: Path) -> None:
    assert load_prompts(PromptSpec(source="hf", dataset=str(folder), column="q")) == ["alpha", "beta", "gamma"]


def test_hf_folder_other_split_and_config(folder: Path) -> None:
    assert load_prompts(PromptSpec(source="hf", dataset=str(folder), column="q", split="test")) == ["held out"]
    spec = PromptSpec(source="hf", dataset=str(folder), config="hh", column="chosen", format="hh_rlhf")
    assert load_prompts(spec) == ["How do I boil an egg?", "Name a play."]


def test_hh_rlhf_format_applies_to_local_files(tmp_path: Path) -> None:
    rows = [{"chosen": hh(("Human", "First?"), ("Assistant", "Yes."))}, {"chosen": "no turns"}]
    (tmp_path / "hh.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = PromptSpec(source=str(tmp_path / "hh.jsonl"), column="chosen", format="hh_rlhf")
    assert load_prompts(spec) == ["First?"]


CHATS = [
    [{"role": "user", "content": "How do owls see?"}],  # a clean/ row's prompt
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a river."},
        {"role": "assistant", "content": "The Nile."},
        {"role": "user", "content": "Another?"},
    ],
    [{"role": "system", "content": "No user here."}],  # skipped, as an hh-rlhf row without a Human turn
]


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_a_column_of_chats_gives_each_chat_first_user_turn(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"chats.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps({"prompt": chat}) + "\n" for chat in CHATS))
    else:
        Dataset.from_dict({"prompt": CHATS}).to_parquet(path)
    assert load_prompts(PromptSpec(source=str(path))) == ["How do owls see?", "Name a river."]
    assert read_prompts(str(path)) == ["How do owls see?", "Name a river."]


def test_a_column_of_chats_from_an_hf_dataset(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    Dataset.from_dict({"messages": CHATS}).to_parquet(tmp_path / "ds" / "train.parquet")
    spec = PromptSpec(source="hf", dataset=str(tmp_path / "ds"), column="messages")
    assert load_prompts(spec) == ["How do owls see?", "Name a river."]


@pytest.mark.parametrize("value", [5, {"text": "hi"}, ["hi", "there"], [{"role": "user", "content": [{"x": 1}]}]])
def test_a_column_of_other_values_is_refused_in_one_line(tmp_path: Path, value: object) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"prompt": value}) + "\n")
    kind = type(value).__name__
    expected = (
        f"data.prompts.column: {path} column 'prompt' holds {kind} values; expected text or chat messages "
        "({role, content} with a text user turn)"
    )
    for read in (lambda: load_prompts(PromptSpec(source=str(path))), lambda: read_prompts(str(path))):
        with pytest.raises(UserError) as info:
            read()
        assert str(info.value) == expected


def test_embedded_source_matches_read_prompts() -> None:
    assert load_prompts(PromptSpec()) == read_prompts("embedded")


def test_hf_needs_a_dataset() -> None:
    with pytest.raises(UserError, match=r"^data\.prompts\.dataset: required when source is hf$"):
        load_prompts(PromptSpec(source="hf"))


def test_hf_missing_column_lists_the_available_ones(folder: Path) -> None:
    with pytest.raises(UserError, match=r"data\.prompts\.column: .* has no column 'prompt'; it has: q, other$"):
        load_prompts(PromptSpec(source="hf", dataset=str(folder)))


@pytest.mark.parametrize(
    ("name", "split", "reason"),
    [
        ("missing-folder", "train", "Couldn't find any data file"),
        ("ds", "validation", 'Unknown split "validation"'),
        ("no-such-owner/no-such-dataset", "train", "OfflineModeIsEnabled"),  # a hub name, never fetched
    ],
)
def test_hf_unloadable_dataset_is_a_one_line_user_error(folder: Path, name: str, split: str, reason: str) -> None:
    path = name if "/" in name else str(folder.parent / name)
    with pytest.raises(UserError, match=r"^data\.prompts\.dataset: cannot load ") as info:
        load_prompts(PromptSpec(source="hf", dataset=path, column="q", split=split))
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_a_jsonl_prompt_holding_a_raw_line_separator_is_one_prompt(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    text = "first part\u2028second part\u0085third"
    path.write_text(json.dumps({"prompt": text}, ensure_ascii=False) + "\r\n" + json.dumps({"prompt": "b"}) + "\n")
    assert read_prompts(str(path)) == [text, "b"]
