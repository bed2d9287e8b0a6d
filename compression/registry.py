"""One registry of steps: name -> (config dataclass, function, stage).

Every technique module registers its steps here at import. Recipes, the build
pipeline, the Hub cards and the app all read this single table, so a new
technique becomes usable everywhere by registering one step.

Stages:
    torch:    PyTorch model -> PyTorch model (pruning, distillation, ...)
    onnx:     ONNX file -> ONNX file (fp16, ORT quantization). The first onnx step
              of a chain exports the current PyTorch model to ONNX first.
    terminal: PyTorch model -> a variant that stays in PyTorch (the torch dynamic
              int8 reference row); must be the last step.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from .config import RecipeError, StepCall, _from_mapping

STAGES = ("torch", "onnx", "terminal")


@dataclass(frozen=True)
class Step:
    name: str
    config_cls: type
    apply: Callable[[Any, Any, Any], Any]  # (state, cfg, ctx) -> state
    stage: str
    tags: tuple[str, ...]  # feed Hub card tags and base_model_relation
    doc: str
    check: Callable[[Any, Any], None] | None = None  # (cfg, model_config) -> raise ValueError


_STEPS: dict[str, Step] = {}
_BUILTIN_MODULES = ("export", "quantization", "lowbit", "distillation", "pruning", "vocab", "qat")


def register_step(name: str, config_cls: type, stage: str, tags: tuple[str, ...] = (), check=None):
    """Decorator: register ``fn(state, cfg, ctx)`` as step ``name``.

    torch/terminal steps get and return a ChainState (model + tokenizer); onnx
    steps get and return the ONNX path. ``check(cfg, model_config)`` runs before
    any work and raises ValueError for configs the model cannot take.
    """
    assert stage in STAGES, stage

    def deco(fn):
        _STEPS[name] = Step(name, config_cls, fn, stage, tuple(tags), (fn.__doc__ or "").strip(), check)
        return fn

    return deco


def _ensure_loaded() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(f"compression.{mod}")


def steps() -> dict[str, Step]:
    _ensure_loaded()
    return dict(_STEPS)


def get_step(name: str) -> Step:
    _ensure_loaded()
    try:
        return _STEPS[name]
    except KeyError:
        raise RecipeError(f"unknown step {name!r}; known steps: {sorted(_STEPS)}") from None


def parse_step(obj: Any, where: str) -> StepCall:
    """``"fp16"`` or ``{"quantize_dynamic": {"per_channel": true}}`` -> StepCall."""
    if isinstance(obj, str):
        name, options = obj, {}
    elif isinstance(obj, dict) and len(obj) == 1:
        (name, options), = obj.items()
    else:
        raise RecipeError(f"{where}: a step is a name or a one-key mapping {{name: options}}, got {obj!r}")
    step = get_step(name)
    return StepCall(name, _from_mapping(step.config_cls, options, f"{where} step {name!r}"))


def check_chain(variant) -> None:
    """Reject chains that cannot run, before any work starts."""
    seen_onnx = False
    for i, call in enumerate(variant.steps):
        stage = get_step(call.name).stage
        if stage == "terminal" and i != len(variant.steps) - 1:
            raise RecipeError(f"variant {variant.name!r}: step {call.name!r} keeps the model in PyTorch and must be last")
        if call.name == "vocab_prune" and any(get_step(c.name).stage == "torch" for c in variant.steps[i + 1 :]):
            raise RecipeError(f"variant {variant.name!r}: put vocab_prune after the training steps (distill, prune, qat)")
        if stage == "onnx":
            seen_onnx = True
        elif seen_onnx:
            raise RecipeError(
                f"variant {variant.name!r}: PyTorch step {call.name!r} comes after an ONNX step; "
                "put PyTorch steps (pruning, distillation, ...) before ONNX ones"
            )


def check_against_model(variant, model_config) -> None:
    """Run each step's model-aware check (depth, heads, ...) before the build starts.

    Checks run against the base model's config; a chain that shrinks the model
    first (e.g. distill then prune) is checked again when the step runs."""
    for call in variant.steps:
        step = get_step(call.name)
        if step.check is not None:
            try:
                step.check(call.config, model_config)
            except ValueError as exc:
                raise RecipeError(f"variant {variant.name!r} step {call.name!r}: {exc}") from None


def chain_tags(variant) -> list[str]:
    tags: list[str] = []
    for call in variant.steps:
        for t in get_step(call.name).tags:
            if t not in tags:
                tags.append(t)
    return tags
