"""One registry of steps: name -> Step (config dataclass, function, and what the rest
of the code needs to know about it).

Technique modules under ``compression.steps`` register here when that package is
imported (``compression.recipe`` imports it). This module imports no technique, so
adding a technique means adding one module to ``steps/`` and one import line there.

Stages:
    torch:    PyTorch model -> PyTorch model (pruning, distillation, ...)
    onnx:     ONNX file -> ONNX file (fp16, int8, 4-bit). The first onnx step of a chain
              exports the current PyTorch model to ONNX first.
    terminal: PyTorch model -> a variant that stays in PyTorch (the torch int8 reference
              row); must be the last step, and says how it is saved and loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from .config import StepCall, from_mapping
from .errors import RecipeError

STAGES = ("torch", "onnx", "terminal")
RELATIONS = ("quantized", "finetune")


@dataclass(frozen=True)
class Step:
    name: str
    config_cls: type
    apply: Callable[[Any, Any, Any], Any]  # (state, cfg, ctx) -> state
    stage: str
    tags: tuple[str, ...]                  # Hub card tags
    doc: str
    relation: str = "finetune"             # what the Hub calls a model this step made from its parent
    check: Callable[[Any, Any], None] | None = None  # (cfg, model_config) -> raise ValueError if it cannot apply
    needs_data: bool | Callable[[Any], bool] = False  # trains/calibrates on labelled sentences (per config if callable)
    after_training: bool = False           # must follow every torch (training) step of the chain
    after_export: Callable[[Any], Any] | None = None  # (onnx_path) -> None, fix-up once the chain's model is exported
    save: Callable[[Any, Any], str] | None = None     # terminal: (state, folder) -> format written
    load: Callable[[Any], Any] | None = None          # terminal: (folder) -> PyTorch model, for measurement
    work: Callable[[Any, int], float] | None = None   # (cfg, training sentences) -> sentence passes it trains (ETA)
    depth: Callable[[Any, int], int] | None = None    # (cfg, depth before) -> encoder depth after (distillation)


_STEPS: dict[str, Step] = {}


def register_step(name: str, config_cls: type, stage: str, tags: tuple[str, ...] = (), **meta):
    """Decorator: register ``fn(state, cfg, ctx)`` as step ``name``; ``meta`` sets Step fields.

    torch/terminal steps get and return a ChainState (model + tokenizer); onnx steps
    get and return the ONNX path."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if meta.get("relation", "finetune") not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}")

    def deco(fn):
        _STEPS[name] = Step(name, config_cls, fn, stage, tuple(tags), (fn.__doc__ or "").strip(), **meta)
        return fn

    return deco


def steps() -> dict[str, Step]:
    return dict(_STEPS)


def get_step(name: str) -> Step:
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
    return StepCall(name, from_mapping(step.config_cls, options, f"{where} step {name!r}"))


def check_chain(variant) -> None:
    """Reject chains that cannot run, before any work starts."""
    seen_onnx = False
    for i, call in enumerate(variant.steps):
        step = get_step(call.name)
        if step.stage == "terminal" and i != len(variant.steps) - 1:
            raise RecipeError(f"variant {variant.name!r}: step {call.name!r} keeps the model in PyTorch and must be last")
        if step.after_training and any(get_step(c.name).stage == "torch" and not get_step(c.name).after_training
                                       for c in variant.steps[i + 1 :]):
            raise RecipeError(f"variant {variant.name!r}: put {call.name} after the training steps (distill, prune, qat)")
        if step.stage == "onnx":
            seen_onnx = True
        elif seen_onnx:
            raise RecipeError(
                f"variant {variant.name!r}: PyTorch step {call.name!r} comes after an ONNX step; "
                "put PyTorch steps (pruning, distillation, ...) before ONNX ones"
            )


def not_applicable(variant, model_config) -> str | None:
    """The first reason a step of ``variant`` cannot apply to this model, or None.

    Checks run against the base model's config; a chain that shrinks the model first
    (distill, then prune) is checked again when the step runs."""
    for call in variant.steps:
        step = get_step(call.name)
        if step.check is not None:
            try:
                step.check(call.config, model_config)
            except ValueError as exc:
                return f"step {call.name!r}: {exc}"
    return None


def chain_tags(variant) -> list[str]:
    tags: list[str] = []
    for call in variant.steps:
        for t in get_step(call.name).tags:
            if t not in tags:
                tags.append(t)
    return tags


def chain_relation(step_names: list[str]) -> str:
    """Hub base_model_relation of a chain: quantized when every step only changes precision."""
    return "quantized" if step_names and all(get_step(n).relation == "quantized" for n in step_names) else "finetune"


def chain_work(variant, n_train: int, depth: int, seen: set | None = None) -> float:
    """Training work of a chain in sentence passes x encoder layers, from what its steps declare.

    ``seen`` holds the chain prefixes already counted: a prefix shared with an earlier variant
    is trained once by the build, so it is counted once."""
    seen = set() if seen is None else seen
    total = 0.0
    for i, call in enumerate(variant.steps):
        step = get_step(call.name)
        if step.depth is not None:
            depth = step.depth(call.config, depth)
        if step.work is None:
            continue
        key = json.dumps([c.to_obj() for c in variant.steps[: i + 1]], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        total += step.work(call.config, n_train) * depth
    return total


def chain_needs_data(variant) -> list[str]:
    """Steps of ``variant`` that need training/calibration sentences with these options."""
    out = []
    for c in variant.steps:
        needs = get_step(c.name).needs_data
        if needs(c.config) if callable(needs) else needs:
            out.append(c.name)
    return out
