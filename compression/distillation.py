"""Knowledge distillation (Hinton et al.; DistilBERT-style students; TinyBERT hidden MSE).

Losses are pure functions of tensors. ``distill`` is a small, explicit loop (not
Trainer) because pruning recovery and QAT reuse it with hooks of their own.
Teacher logits are computed once per build and cached (see BuildContext).
"""
from __future__ import annotations

import copy
import logging
import math
import random
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .evaluation import accepted_inputs
from .registry import register_step

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ pure losses
def kd_loss(logits_s: torch.Tensor, logits_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) · T², batch mean (T² keeps gradients T-invariant)."""
    t = temperature
    return F.kl_div(F.log_softmax(logits_s / t, -1), F.log_softmax(logits_t / t, -1), log_target=True, reduction="batchmean") * t * t


def hidden_mse(hidden_s: list[torch.Tensor], hidden_t: list[torch.Tensor], mapping: list[int], mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT-style MSE between student layer i and teacher layer mapping[i] (masked tokens only)."""
    m = mask.unsqueeze(-1).float()
    losses = [(((hidden_s[i] - hidden_t[j]) ** 2) * m).sum() / (m.sum() * hidden_s[i].shape[-1]) for i, j in enumerate(mapping)]
    return torch.stack(losses).mean()


def distill_loss(logits_s, logits_t, labels, alpha: float, temperature: float) -> torch.Tensor:
    """α·KD + (1−α)·CE."""
    return alpha * kd_loss(logits_s, logits_t, temperature) + (1 - alpha) * F.cross_entropy(logits_s, labels)


# ------------------------------------------------------------------ students
def encoder_layers(model) -> torch.nn.ModuleList:
    for path in ("bert.encoder.layer", "roberta.encoder.layer", "distilbert.transformer.layer", "deberta.encoder.layer"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise ValueError(f"{type(model).__name__}: layer dropping supports BERT, RoBERTa, DistilBERT and DeBERTa encoders")


def make_student(teacher, layers: tuple[int, ...]):
    """Copy ``teacher`` keeping only the encoder layers ``layers`` (DistilBERT-style init)."""
    n = len(encoder_layers(teacher))
    if not layers or len(layers) > n or any(not 0 <= i < n for i in layers):
        raise ValueError(f"student layers {list(layers)} must be distinct indices of the teacher's {n} layers")
    student = copy.deepcopy(teacher)
    kept = torch.nn.ModuleList([encoder_layers(student)[i] for i in layers])
    parent = student.get_submodule(_layer_parent(student))
    setattr(parent, "layer", kept)
    student.config.num_hidden_layers = len(layers)
    if hasattr(student.config, "n_layers"):
        student.config.n_layers = len(layers)
    return student


def _layer_parent(model) -> str:
    for name, mod in model.named_modules():
        if isinstance(getattr(mod, "layer", None), torch.nn.ModuleList):
            return name
    raise ValueError("no encoder layer list found")


def spread_layers(n_teacher: int, n_student: int) -> tuple[int, ...]:
    """Evenly spaced teacher layers, always keeping the last (e.g. 6 -> 3: 1, 3, 5)."""
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"student depth {n_student} must be between 1 and the teacher's {n_teacher} layers")
    step = n_teacher / n_student
    return tuple(int(round((i + 1) * step)) - 1 for i in range(n_student))


# ------------------------------------------------------------------ training loop
@dataclass(frozen=True)
class TrainConfig:
    """KD fine-tuning shared by distillation, pruning recovery and QAT.

    Every knob is a field so a recipe can set it and the fingerprint sees it.
    """

    epochs: float = 1.0              # passes over the (sub-sampled) training split
    max_steps: int | None = None     # overrides epochs: fixed-budget recovery runs
    batch_size: int = 32
    learning_rate: float = 1e-4
    alpha: float = 0.9               # KD weight vs. cross-entropy on the gold labels
    temperature: float = 2.0         # softens the teacher's distribution (T² keeps gradients comparable)
    hidden_weight: float = 0.0       # TinyBERT hidden-state MSE; 0 lets cached teacher logits replace teacher forwards
    seed: int = 0
    freeze_embeddings: bool = True   # on CPU the 11.7M-row table's update costs more than a 3-layer step
    train_samples: int | None = None # KD on a deterministic subset: students need signal, not every sub-phrase
    weight_decay: float = 0.01       # AdamW default of BERT fine-tuning
    warmup_ratio: float = 0.1        # linear warm-up share of the steps, then linear decay to 0
    max_grad_norm: float = 1.0       # clipping: KD on fresh students spikes early

    def __post_init__(self):
        if self.train_samples is not None and self.train_samples < 1:
            raise ValueError(f"train_samples must be a positive integer or null, got {self.train_samples}")
        if not 0 <= self.warmup_ratio < 1 or self.max_grad_norm <= 0 or self.weight_decay < 0:
            raise ValueError("warmup_ratio must be in [0, 1), max_grad_norm > 0 and weight_decay >= 0")
        if not 0 <= self.alpha <= 1 or self.temperature <= 0:
            raise ValueError("alpha must be in [0, 1] and temperature > 0")


def train_steps(n_examples: int, cfg: TrainConfig) -> int:
    n = min(n_examples, cfg.train_samples or n_examples)
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * n / cfg.batch_size))


def distill(teacher, student, data, cfg: TrainConfig, tokenizer, teacher_logits: torch.Tensor | None = None,
            max_length: int = 128, layer_map: list[int] | None = None, on_step: Callable[[int, int], None] | None = None,
            after_step: Callable[[int, int], None] | None = None):
    """Train ``student`` to match ``teacher`` on ``data`` (TextData); returns the student in eval mode.

    ``on_step(step, total)`` runs before each forward pass (gradual pruning raises
    sparsity there); ``after_step(step, total)`` after each optimizer step (masks
    are re-applied there so pruned weights stay exactly zero).
    """
    torch.manual_seed(cfg.seed)
    use_hidden = cfg.hidden_weight > 0
    if teacher_logits is None and not use_hidden:
        teacher_logits = teacher_logits_for(teacher, tokenizer, data.texts, max_length)
    if cfg.train_samples is not None and cfg.train_samples < len(data):
        idx = sorted(random.Random(cfg.seed).sample(range(len(data)), cfg.train_samples))
        data = type(data)([data.texts[i] for i in idx], [data.labels[i] for i in idx])
        teacher_logits = teacher_logits[idx] if teacher_logits is not None else None
    enc = tokenizer(data.texts, truncation=True, max_length=max_length)
    labels = torch.tensor(data.labels)
    total = train_steps(len(labels), cfg)
    if cfg.freeze_embeddings:
        for p in student.get_input_embeddings().parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warm = max(1, int(total * cfg.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / total))
    batches = _length_grouped_batches([len(ids) for ids in enc["input_ids"]], cfg.batch_size, total, cfg.seed)
    student.train()
    teacher.eval()
    for step in tqdm(range(total), desc="distill", unit="step", leave=False):
        idx = batches[step]
        batch = accepted_inputs(student, tokenizer.pad({k: [v[i] for i in idx] for k, v in enc.items()}, return_tensors="pt"))
        if on_step is not None:
            on_step(step, total)
        out_s = student(**batch, output_hidden_states=use_hidden)
        if use_hidden:
            with torch.no_grad():
                out_t = teacher(**batch, output_hidden_states=True)
            logits_t = out_t.logits
        else:
            logits_t = teacher_logits[idx]
        loss = distill_loss(out_s.logits, logits_t, labels[idx], cfg.alpha, cfg.temperature)
        if use_hidden:
            mapping = [0] + [j + 1 for j in (layer_map or range(len(out_s.hidden_states) - 1))]
            loss = loss + cfg.hidden_weight * hidden_mse(list(out_s.hidden_states), list(out_t.hidden_states), mapping, batch["attention_mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(step, total)
    return student.eval()


def _length_grouped_batches(lengths: list[int], batch_size: int, total: int, seed: int) -> list[list[int]]:
    """``total`` random batches of similar-length examples (like Trainer's group_by_length):
    on CPU, padding a 3-word phrase to a 50-word sentence is most of the cost."""
    rng = random.Random(seed)
    batches: list[list[int]] = []
    while len(batches) < total:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        chunk = batch_size * 50
        epoch = []
        for c in range(0, len(order), chunk):
            part = sorted(order[c : c + chunk], key=lengths.__getitem__)
            epoch += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        rng.shuffle(epoch)
        batches += epoch
    return batches[:total]


@torch.no_grad()
def teacher_logits_for(teacher, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 64) -> torch.Tensor:
    """Teacher logits in the order of ``texts`` (computed in length order to avoid padding)."""
    teacher.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), teacher.config.num_labels)
    for i in tqdm(range(0, len(texts), batch_size), desc="teacher logits", unit="batch", leave=False):
        idx = order[i : i + batch_size]
        batch = tokenizer([texts[j] for j in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out[idx] = teacher(**accepted_inputs(teacher, batch)).logits.float()
    return out


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
    n = getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "n_layers", None)
    if n is None:
        return
    if cfg.num_layers is not None and cfg.num_layers > n:
        raise ValueError(f"student depth {cfg.num_layers} is deeper than the teacher's {n} layers")
    if cfg.layers is not None and (len(set(cfg.layers)) != len(cfg.layers) or any(not 0 <= i < n for i in cfg.layers)):
        raise ValueError(f"layers {list(cfg.layers)} must be distinct indices in 0..{n - 1}")


@register_step("distill", DistillConfig, stage="torch", tags=("distilled",), check=_check)
def _distill_step(state, cfg: DistillConfig, ctx):
    """Layer-dropped student trained with KD (+ optional hidden-state MSE)."""
    n = len(encoder_layers(state.model))
    _check(cfg, state.model.config)
    layers = cfg.layers or spread_layers(n, cfg.num_layers)
    student = make_student(state.model, layers)
    log.info("distilling into %d layers %s", len(layers), list(layers))
    state.model = distill(ctx.teacher, student, ctx.splits["train"], cfg, state.tokenizer,
                          None if cfg.hidden_weight else ctx.teacher_train_logits(),
                          ctx.recipe.dataset.max_length, layer_map=list(layers))
    return state
