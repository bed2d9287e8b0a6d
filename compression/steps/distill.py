"""Distillation into a shallower student (DistilBERT-style init from teacher layers,
KD on the teacher's logits, optional TinyBERT hidden-state MSE)."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch

from ..modeling import encoder_layers, num_layers, replace_encoder_layers, require
from ..registry import register_step
from .training import TrainConfig, kd_finetune, sentence_passes

log = logging.getLogger(__name__)


def make_student(teacher, layers: tuple[int, ...]):
    """Copy ``teacher`` keeping only the encoder layers ``layers`` (DistilBERT-style init)."""
    n = len(encoder_layers(teacher))
    if not layers or len(layers) > n or any(not 0 <= i < n for i in layers):
        raise ValueError(f"student layers {list(layers)} must be distinct indices of the teacher's {n} layers")
    student = copy.deepcopy(teacher)
    replace_encoder_layers(student, torch.nn.ModuleList([encoder_layers(student)[i] for i in layers]))
    config = student.config  # per-layer records follow their layers to the student's indices
    if getattr(config, "pruned_heads", None):
        config.pruned_heads = {new: config.pruned_heads[old] for new, old in enumerate(layers) if old in config.pruned_heads}
    if getattr(config, "intermediate_sizes", None):
        config.intermediate_sizes = [config.intermediate_sizes[i] for i in layers]
    return student


def spread_layers(n_teacher: int, n_student: int) -> tuple[int, ...]:
    """Evenly spaced teacher layers, always keeping the last (e.g. 6 -> 3: 1, 3, 5)."""
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"student depth {n_student} must be between 1 and the teacher's {n_teacher} layers")
    step = n_teacher / n_student
    return tuple(int(round((i + 1) * step)) - 1 for i in range(n_student))


# ------------------------------------------------------------------ the step
@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """Distil the current model into a shallower student.

    Fields (plus TrainConfig's): num_layers (student depth; layers spread evenly)
    or layers (explicit teacher layer indices). The student starts from those
    layers of the current model (the teacher, or a pruned teacher earlier in the chain).
    """

    num_layers: int | None = None
    layers: tuple[int, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        if (self.num_layers is None) == (self.layers is None):
            raise ValueError("set exactly one of num_layers or layers")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")


def _check(cfg: DistillConfig, model_config) -> None:
    require(model_config, "encoder", "layer dropping")
    n = num_layers(model_config)
    if n is None:
        return
    if cfg.num_layers is not None and cfg.num_layers > n:
        raise ValueError(f"student depth {cfg.num_layers} is deeper than the teacher's {n} layers")
    if cfg.layers is not None and (len(set(cfg.layers)) != len(cfg.layers) or any(not 0 <= i < n for i in cfg.layers)):
        raise ValueError(f"layers {list(cfg.layers)} must be distinct indices in 0..{n - 1}")


@register_step("distill", DistillConfig, stage="torch", tags=("distilled",), check=_check, needs_data=True, work=sentence_passes,
               depth=lambda cfg, depth: cfg.num_layers or len(cfg.layers))
def _distill_step(state, cfg: DistillConfig, ctx):
    """Layer-dropped student trained with KD (+ optional hidden-state MSE)."""
    n = len(encoder_layers(state.model))
    _check(cfg, state.model.config)
    layers = cfg.layers or spread_layers(n, cfg.num_layers)
    student = make_student(state.model, layers)
    log.info("distilling into %d layers %s", len(layers), list(layers))
    state.model = student
    return kd_finetune(state, cfg, ctx, layer_map=list(layers))
