"""Training stages. Each kind is a module with `run(stage, ctx) -> StageResult`."""

from __future__ import annotations

from collections.abc import Callable

from organisms.stages import adversarial, dpo, grpo, sft
from organisms.stages.context import StageContext, StageResult

STAGES: dict[str, Callable[..., StageResult]] = {
    "sft": sft.run,
    "dpo": dpo.run,
    "grpo": grpo.run,
    "adversarial": adversarial.run,
}

__all__ = ["STAGES", "StageContext", "StageResult"]
