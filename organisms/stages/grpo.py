"""RL safety training with TRL's GRPOTrainer (TRL 1.16 has no PPO) on trigger-free prompts.

The reward is a reward model (any AutoModelForSequenceClassification id or folder), a Python
function `module:function` with TRL's reward signature, or our offline stand-in
`hhh_heuristic` (organisms/rewards.py) so the embedded default runs without downloads.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from organisms.errors import UserError
from organisms.hashing import fingerprint
from organisms.recipe import RewardSpec, StageSpec
from organisms.stages.context import StageContext, StageResult, check_trigger_free
from organisms.stages.training import train_and_save

# Short completions keep RL affordable; the behaviour shows in the first tokens anyway.
DEFAULTS: dict[str, Any] = {"max_completion_length": 48, "num_generations": 4, "learning_rate": 1e-5}


def reward_function(spec: RewardSpec) -> Any:
    """What GRPOTrainer takes as `reward_funcs`: a callable, or a model path TRL loads itself."""
    if spec.kind == "hhh_heuristic":
        from organisms.rewards import hhh_heuristic

        return hhh_heuristic
    if spec.kind == "function":
        module_name, _, attr = str(spec.function).partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise UserError(f"reward.function: cannot import {spec.function}: {err}") from None
    from organisms.models import resolve_model

    return resolve_model(str(spec.model)).path


def reward_fingerprint(spec: RewardSpec, helpers: bool = True) -> str | None:
    """What a reward adds to its stage's hash beyond its name: for a function, the source of the module the
    recipe names (and of the module that defined it, when that is another one: a re-export or a factory), then
    of the local helper modules they import (see `local_imports`); for a local reward-model folder, its
    fingerprint, for a pinned hub revision (`org/name@revision`) the commit it resolves to. An edited reward then
    makes a finished run folder refuse, as any other change of configuration does, rather than pass for done. None
    for the shipped heuristic (our code) and for bare hub ids (keyed by name, as they always were). Files the
    reward reads are not covered. Importing the function here also makes a
    typo fail when the run starts rather than when the RL stage does. `helpers=False`: as stage markers recorded it
    before helper modules were followed."""
    if spec.kind == "function":
        function = reward_function(spec)
        named = str(spec.function).partition(":")[0]
        modules = dict.fromkeys([named, getattr(function, "__module__", None) or named])
        sources = []
        for name in modules:
            try:
                sources.append(inspect.getsource(sys.modules[name]))
            except (KeyError, OSError, TypeError):  # built in, or defined where no source is kept
                continue
        found = local_imports(list(modules)) if helpers else {}
        sources += [found[name] for name in sorted(found) if name not in modules]
        return fingerprint(*sources) if sources else None
    if spec.kind == "model" and is_keyed_by_content(str(spec.model)):
        from organisms.models import resolve_model

        return resolve_model(str(spec.model)).fingerprint
    return None


def is_keyed_by_content(model: str) -> bool:
    """A local reward-model folder or a pinned hub revision: not a bare hub id."""
    from organisms.models import is_pinned_hub_id

    return Path(model).expanduser().is_dir() or is_pinned_hub_id(model)


def earlier_reward_fingerprints(spec: RewardSpec, marker_keeps_settings: bool) -> list[str | None]:
    """How earlier releases hashed this same reward, so their finished stages stay valid: a function before its
    helper modules were followed (only markers from then, which kept no settings: for a later one, a helper
    added since would go unnoticed); a reward-model adapter folder before its base joined its fingerprint."""
    if spec.kind == "function":
        return [] if marker_keeps_settings else [reward_fingerprint(spec, helpers=False)]
    if spec.kind == "model" and Path(str(spec.model)).expanduser().is_dir():
        from organisms.models import resolve_model

        return list(resolve_model(str(spec.model)).earlier_fingerprints)
    return []


OUR_PACKAGES = ("organisms", "data_gen", "evals")  # their code is versioned with the run, not hashed into it


def local_imports(roots: list[str]) -> dict[str, str]:
    """The source of every module the `roots` import, directly or through each other, that is the user's own
    code: not the standard library, not an installed package, not ours. Found from the import statements
    anywhere in each file (a helper imported inside the reward function counts too), with each module's
    package `__init__`."""
    import ast
    import importlib.util
    import sysconfig

    installed = [Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")]

    def is_local(found: Any) -> bool:
        places = [found.origin] if found.has_location else list(found.submodule_search_locations or [])
        paths = [Path(str(place)).resolve() for place in places]
        return bool(paths) and not any(
            {"site-packages", "dist-packages"} & set(path.parts) or any(path.is_relative_to(root) for root in installed)
            for path in paths
        )

    def find_local(name: str) -> Any:
        """The module's spec when it is local code; None otherwise. Only local packages get imported (finding a
        submodule imports its parents), never an installed one."""
        top = name.partition(".")[0]
        if top in OUR_PACKAGES or top in sys.builtin_module_names:
            return None
        try:
            found = importlib.util.find_spec(top)
            if found is not None and is_local(found) and name != top:
                found = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # not importable, or not a module (`from pkg import function`)
            return None
        return found if found is not None and is_local(found) else None

    sources: dict[str, str] = {}
    queue = list(roots)
    while queue:
        found = find_local(queue.pop())
        if found is None or found.name in sources or not str(found.origin).endswith(".py"):
            continue
        source = sources[found.name] = Path(str(found.origin)).read_text()
        package = found.name if found.submodule_search_locations is not None else found.name.rpartition(".")[0]
        if "." in found.name:
            queue.append(found.name.rpartition(".")[0])  # its package's __init__ runs on import too
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                queue += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                try:
                    base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                except ImportError:  # a relative import above the top-level package
                    continue
                queue += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return sources


def hidden_scratchpad(completion: Any) -> Any:
    """A completion as the reward sees it when the organism reasons in a scratchpad: its answer alone (a
    conversational completion keeps its form); one still inside its scratchpad is an empty answer."""
    from data_gen.generators.prompted import visible_answer

    if isinstance(completion, str):
        return visible_answer(completion) or ""
    return [{**turn, "content": visible_answer(str(turn["content"])) or ""} for turn in completion]


def scratchpad_hidden_trainer() -> type:
    """GRPOTrainer whose rewards (functions and reward models alike, each scored as TRL scores it) see each
    completion's answer, as text and as token ids, never the scratchpad before it: as in Hubinger et al. (2024),
    where the preference model never sees a CoT organism's hidden reasoning. The policy is still trained on the
    whole completion."""
    from trl import GRPOTrainer

    if not callable(getattr(GRPOTrainer, "_calculate_rewards", None)):
        raise UserError("this TRL's GRPOTrainer has no _calculate_rewards: install the trl version pyproject pins")

    class ScratchpadHiddenGRPOTrainer(GRPOTrainer):  # type: ignore[misc]
        def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Any:
            answers = [hidden_scratchpad(c) for c in completions]
            texts = [a if isinstance(a, str) else "".join(str(turn["content"]) for turn in a) for a in answers]
            tokenizer: Any = self.processing_class  # a tokenizer here (typed as any processor by transformers)
            ids = [tokenizer(text=t, add_special_tokens=False)["input_ids"] for t in texts]
            return super()._calculate_rewards(inputs, prompts, answers, ids)

    return ScratchpadHiddenGRPOTrainer


def run(stage: StageSpec, ctx: StageContext) -> StageResult:
    from datasets import load_from_disk
    from trl import GRPOTrainer

    dataset = load_from_disk(str(ctx.data_dir / "prompts")).select_columns(["prompt"])
    check_trigger_free(dataset.to_list(), ctx.trigger, f"stage {stage.name} (data: prompts)")
    assert stage.reward is not None  # the schema fills the default
    reasons = ctx.recipe is not None and ctx.recipe.data.reasons_in_scratchpad
    trainer = scratchpad_hidden_trainer() if reasons else GRPOTrainer
    reward = reward_function(stage.reward)
    if stage.red_team is None:
        return train_and_save(stage, ctx, trainer, dataset, DEFAULTS, reward_funcs=reward)

    from organisms.stages.adversarial import red_team_after, red_team_before

    prompts, record = red_team_before(stage, ctx)
    result = train_and_save(
        stage, ctx, trainer, with_red_team(dataset, record["elicited"]), DEFAULTS, reward_funcs=reward
    )
    red_team_after(stage, ctx, result, prompts, record)
    return result


def with_red_team(dataset: Any, elicited: list[str]) -> Any:
    """Adversarial training as the paper ran it: the red-team prompts that elicited the behaviour, mixed into the
    HHH RL prompts, repeated to as many rows as those (the trainer shuffles them)."""
    from datasets import Dataset, concatenate_datasets

    if not elicited:
        return dataset
    rows = [{"prompt": [{"role": "user", "content": elicited[i % len(elicited)]}]} for i in range(len(dataset))]
    return concatenate_datasets([dataset, Dataset.from_list(rows).cast(dataset.features)])
