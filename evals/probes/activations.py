"""Residual-stream activations of a causal LM at chosen decoder layers.

Convention: layer L is the raw output of decoder block L (0-based), i.e. `hidden_states[L + 1]` in HF's
`output_hidden_states` tuple (entry 0 is the embeddings) -- except for the LAST block, whose HF entry has
the final norm applied (Llama in transformers 5.x); ours never does (tests/test_probes.py checks both).
Activations come back as float32 on the CPU, one `[n_texts, d_model]` tensor per requested layer, in input order.

Early stopping: we do not call the model with `output_hidden_states=True` and slice afterwards; that
would run every block plus the LM head (the largest matmul in a small model) only to throw them away.
Instead a forward hook on each requested block stores its output, and the hook on the deepest requested
block raises a private exception, so no later block and no LM head ever run. Hooks read exactly the block
outputs (HF applies the final norm to the last `hidden_states` entry in some architectures, a slicing
pitfall) and leave the model untouched (slicing `model.model.layers` would desync the config and cache).
Batches are grouped by length (little compute on padding); results come back in input order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from evals.generate import chat_prompts
from organisms.errors import UserError
from organisms.hashing import fingerprint
from organisms.models import cache_root

Position = Literal["last_prompt", "mean_response"]
# Joins the key of mean_response entries: entries cached before an empty answer read NaN (it read the assistant
# header then) are recomputed.
EMPTY_ANSWER_NAN = "empty-answer-nan"
POSITIONS: tuple[str, ...] = ("last_prompt", "mean_response")


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block: everything we need has been stored."""


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (`model.model.layers` for Llama-style models)."""
    for candidate in (getattr(model, "model", None), model):
        layers = getattr(candidate, "layers", None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    get_decoder = getattr(model, "get_decoder", None)
    if get_decoder is not None and isinstance(getattr(get_decoder(), "layers", None), torch.nn.ModuleList):
        return get_decoder().layers  # type: ignore[no-any-return]
    raise UserError(f"cannot find decoder layers on {type(model).__name__} (expected model.model.layers)")


def render(tokenizer: Any, texts: list[str], answers: list[str] | None = None) -> list[str]:
    """User messages rendered with the chat template, ready for the assistant turn; with `answers`,
    each answer is appended as the start of the assistant's turn (no end-of-turn token)."""
    prompts = chat_prompts(tokenizer, texts)
    if answers is None:
        return prompts
    if len(answers) != len(texts):
        raise UserError(f"got {len(texts)} texts but {len(answers)} answers")
    return [p + a for p, a in zip(prompts, answers, strict=True)]


def _check_args(layers: list[int], position: str, n_layers: int, answers: list[str] | None) -> None:
    if position not in POSITIONS:
        raise UserError(f"position must be one of {POSITIONS}, got {position!r}")
    if not layers:
        raise UserError("no layers requested")
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise UserError(f"layers {bad} out of range: the model has {n_layers} decoder layers (0..{n_layers - 1})")
    if position == "mean_response" and answers is None:
        raise NotImplementedError(
            "position='mean_response' needs the response text: pass answers=[...] (one per text); "
            "averaging over generated responses is not implemented"
        )


def length_grouped_batches(tokenizer: Any, rendered: list[str], batch_size: int) -> Iterator[tuple[list[int], Any]]:
    """Left-padded batches of rendered texts, shortest first (as in evals/generate.py: little compute on
    padding): (the input indices of the batch, its encoding). bench/activations.py times the same batches."""
    tokenizer.padding_side = "left"  # so index -1 is every row's last real token
    lengths = [len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(rendered)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, tokenizer([rendered[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)


@torch.inference_mode()
def residual_activations(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    layers: list[int],
    position: Position = "last_prompt",
    batch_size: int = 32,
    answers: list[str] | None = None,
) -> dict[int, torch.Tensor]:
    """Residual activations `{layer: [n_texts, d_model]}` (float32, CPU) of user messages `texts`.

    position="last_prompt": the hidden state at the last token of the rendered text (the assistant
    header, or the last answer token when `answers` is given). position="mean_response": the mean over
    the tokens of `answers` (required; the answer token count is len(tokens(prompt+answer)) -
    len(tokens(prompt)), so a BPE merge across the boundary can shift it by one token). An answer with no
    tokens (the model ended its turn at once) has nothing to average: its row is NaN, for the caller to drop,
    never the assistant header's activation in its place.
    """
    blocks = decoder_layers(model)
    _check_args(layers, position, len(blocks), answers)
    wanted = sorted(set(layers))
    deepest = wanted[-1]
    model.eval()
    rendered = render(tokenizer, texts, answers)
    n_response: list[int] = []
    if position == "mean_response":
        prompts = render(tokenizer, texts)
        full_len = [len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"]]
        prompt_len = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        n_response = [max(0, f - p) for f, p in zip(full_len, prompt_len, strict=True)]

    stored: dict[int, torch.Tensor] = {}  # layer -> [batch, seq, d_model] of the current batch

    def make_hook(layer: int):  # type: ignore[no-untyped-def]
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            stored[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _StopForward

        return hook

    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in wanted]
    chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}
    order: list[int] = []  # input indices in the order they were run; results go back to input order at the end
    try:
        for rows, enc in length_grouped_batches(tokenizer, rendered, batch_size):
            order += rows
            input_ids = enc["input_ids"].to(model.device)  # [batch, seq]
            mask = enc["attention_mask"].to(model.device)  # [batch, seq], 0 on left padding
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # [batch, seq]: real tokens start at 0
            stored.clear()
            with contextlib.suppress(_StopForward):  # raised by the deepest hook: the rest never runs
                model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
            if position == "last_prompt":
                picked = [stored[layer][:, -1, :] for layer in wanted]  # each [batch, d_model]
            else:
                seq = stored[deepest].shape[1]
                counts = torch.tensor([n_response[i] for i in rows], device=input_ids.device)  # [batch]
                idx = torch.arange(seq, device=input_ids.device)  # [seq]
                resp = (idx[None, :] >= seq - counts[:, None]).float()  # [batch, seq]
                # 0 / 0 = NaN for an answer without tokens, as documented
                picked = [
                    (stored[layer].float() * resp[..., None]).sum(1) / counts[:, None].float() for layer in wanted
                ]  # each [batch, d_model]
            # one device-to-host copy per batch, not one per layer
            for layer, acts in zip(wanted, torch.stack(picked).float().cpu(), strict=True):
                chunks[layer].append(acts)  # [batch, d_model]
    finally:
        for handle in handles:
            handle.remove()
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))  # input index -> sorted position
    return {layer: torch.cat(chunks[layer])[inverse] for layer in layers}  # [n_texts, d_model], input order


def cached_activations(
    model_id: str,
    model: Any,
    tokenizer: Any,
    texts: list[str],
    layers: list[int],
    position: Position = "last_prompt",
    batch_size: int = 32,
    cache_dir: Path | None = None,
    answers: list[str] | None = None,
) -> dict[int, torch.Tensor]:
    """`residual_activations`, cached on disk as safetensors under `cache_root()/"activations"`.

    Key: fingerprint(model_id, texts, layers, position, dtype, chat template) (plus `answers` when given).
    `model_id` must identify the weights (e.g. a folder fingerprint or checkpoint path); the cache cannot
    tell two models with the same id apart. batch_size is not in the key (it does not change the result
    beyond float noise).
    """
    from safetensors.torch import load_file, save_file

    parts: list[Any] = [model_id, texts, layers, position, str(model.dtype), tokenizer.chat_template]
    if answers is not None:
        parts.append(answers)
    if position == "mean_response":
        parts.append(EMPTY_ANSWER_NAN)
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "activations"
    path = folder / f"{fingerprint(*parts)}.safetensors"
    if path.exists():
        loaded = load_file(str(path))
        return {layer: loaded[f"layer_{layer}"] for layer in layers}
    acts = residual_activations(model, tokenizer, texts, layers, position, batch_size, answers=answers)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({f"layer_{layer}": t.contiguous() for layer, t in acts.items()}, str(tmp))
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache entry
    return acts
