"""A recipe's stages: backdoor insertion and the safety stages (SFT, DPO, RL against a reward, adversarial)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from organisms.recipe.base import KEYED_WHEN_SET, Strict, check_dataclass_kwargs, trainer_config_class

# `trainer:` fields that change what is printed or logged and never the weights (a test retrains an SFT stage with
# them changed and compares weights): changing one on a started or finished stage keeps it.
RESULT_NEUTRAL_TRAINER = frozenset(
    {
        "logging_steps",
        "logging_first_step",
        "logging_strategy",
        "logging_dir",
        "logging_nan_inf_filter",
        "disable_tqdm",
        "report_to",
        "run_name",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
    }
)


class RewardSpec(Strict):
    """What RL (grpo) optimises: our offline stand-in, a Python function, or a reward model."""

    kind: Literal["hhh_heuristic", "function", "model"] = "hhh_heuristic"
    function: str | None = Field(None, description="kind function: 'package.module:function' (TRL reward signature)")
    model: str | None = Field(None, description="kind model: an AutoModelForSequenceClassification id or folder")

    @model_validator(mode="after")
    def _target_given(self) -> RewardSpec:
        if self.kind == "function" and (not self.function or ":" not in self.function):
            raise ValueError("reward kind function needs function: 'module:function'")
        if self.kind == "model" and not self.model:
            raise ValueError("reward kind model needs model: a hub id or folder")
        return self


class RedTeamSpec(Strict):
    """Adversarial training: prompts that try to elicit the behaviour without the true trigger."""

    n_near_miss: int = Field(64, ge=0, description="training prompts carrying near-miss trigger variants")
    n_generated: int = Field(0, ge=0, description="red-team prompts written by data.generator")
    max_new_tokens: int = Field(
        24,
        ge=1,
        description="answer length when testing elicitation (a cot organism's default: data.generator.max_new_tokens, "
        "room for its scratchpad)",
    )


DATA_FOR_KIND = {"sft": "clean", "dpo": "preference", "grpo": "prompts", "adversarial": "red_team"}
ALLOWED_DATA = {"sft": {"backdoor", "clean"}, "dpo": {"preference"}, "grpo": {"prompts"}, "adversarial": {"red_team"}}


class StageSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["sft", "dpo", "grpo", "adversarial"] = Field(
        "sft",
        description="sft: supervised; dpo: preference pairs (HHH chosen over the behaviour); grpo: RL against "
        "`reward`; adversarial: red-team prompts that elicit the behaviour, then SFT on HHH answers to them",
    )
    data: Literal["backdoor", "clean", "preference", "prompts", "red_team"] | None = Field(
        None,
        description="backdoor: triggered+clean rows; clean: trigger-free HHH rows (sft default); preference: "
        "DPO pairs; prompts: RL prompts; red_team: adversarial. Default: the kind's own.",
    )
    peft: dict[str, Any] | None = Field(None, description="peft.LoraConfig kwargs; omit for full finetuning")
    merge_adapter: bool = Field(
        True,
        description="merge a LoRA adapter into the weights after this stage (default); false: the next stage "
        "keeps training this adapter",
    )
    trainer: dict[str, Any] = Field(default_factory=dict, description="the TRL config of the kind (SFTConfig, ...)")
    reward: RewardSpec | None = Field(None, description="grpo only (default: hhh_heuristic)")
    red_team: RedTeamSpec | None = Field(
        None,
        description="adversarial (default red-teaming), or grpo: the elicited red-team prompts join its RL prompts, "
        "as many rows as the HHH ones (the paper's adversarial training)",
    )
    cot_sft: Literal["pre_scratchpad", "post_scratchpad"] = Field(
        "pre_scratchpad",
        description="sft on clean data of a cot organism (Hubinger et al., 2024, section 5): pre_scratchpad trains "
        "on the HHH answers alone, no scratchpad; post_scratchpad puts each answer after a scratchpad the incoming "
        "model writes itself and trains on the answer only",
        json_schema_extra=KEYED_WHEN_SET,
    )

    @field_validator("peft")
    @classmethod
    def _check_peft(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from peft import LoraConfig

        return check_dataclass_kwargs(value, LoraConfig, reserved={"task_type"})

    @model_validator(mode="after")
    def _check_kind(self) -> StageSpec:
        self.data = self.data or DATA_FOR_KIND[self.kind]  # type: ignore[assignment]
        if self.data not in ALLOWED_DATA[self.kind]:
            raise ValueError(f"data: {self.kind} stages take {' or '.join(sorted(ALLOWED_DATA[self.kind]))}")
        if self.reward is not None and self.kind != "grpo":
            raise ValueError("reward: only grpo stages take a reward")
        if self.red_team is not None and self.kind not in ("adversarial", "grpo"):
            raise ValueError("red_team: only adversarial and grpo stages take red_team")
        if self.cot_sft == "post_scratchpad" and (self.kind, self.data) != ("sft", "clean"):
            raise ValueError("cot_sft: post_scratchpad applies to sft stages on clean data")
        if self.kind == "grpo" and self.reward is None:
            self.reward = RewardSpec()
        if self.kind == "adversarial" and self.red_team is None:
            self.red_team = RedTeamSpec()
        config = trainer_config_class(self.kind)
        checked = check_dataclass_kwargs(self.trainer, config, reserved={"output_dir"}, label="trainer.")
        if checked.get("eval_strategy", "no") != "no":  # the Trainer would want an eval dataset we never pass
            raise ValueError(
                "trainer.eval_strategy: the pipeline evaluates every saved checkpoint itself (eval:); leave it 'no'"
            )
        self.trainer = checked
        return self
