"""KD fine-tuning: the one training loop behind distillation, pruning recovery and QAT.

A small explicit loop (not Trainer) because pruning and QAT hook into it (raise
sparsity before a step, re-apply masks after one). It runs through Accelerate, so the
same code uses CUDA when a GPU is present and spreads over several under
``accelerate launch`` (each process takes its share of the batches); on a CPU it is
Accelerate's CPU path. Teacher logits on the training split are computed once per build
(``ctx.teacher_train_logits``) and reused by every student.
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..config import check_precision
from ..machine import training_precision
from ..modeling import accepted_inputs, freeze_lowest_layers, set_dropout
from .losses import check_kd_loss, distill_loss, hidden_mse

log = logging.getLogger(__name__)


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
    kd_loss: str = "kl"              # the KD term: "kl" (softmax at temperature) or "mse" (raw logits: keeps pushing
                                     # where the teacher is sure, so the student copies margins, not only sides)
    hidden_weight: float = 0.0       # TinyBERT hidden-state MSE; 0 lets cached teacher logits replace teacher forwards
    seed: int = 0
    freeze_embeddings: bool = True   # on CPU the 11.7M-row table's update costs more than a 3-layer step
    freeze_layers: int = 0           # the embeddings block and the lowest this many blocks fixed during KD: backward
                                     # stops above them (a cheaper step on CPU, where training is all GEMM)
    train_samples: int | None = None # KD on a deterministic subset: students need signal, not every sub-phrase
    min_words: int = 0               # KD only on phrases of at least this many words (before train_samples): users and
                                     # validation send whole sentences; SST-2's 1-3 word sub-phrases say little about them
    weight_decay: float = 0.01       # AdamW default of BERT fine-tuning
    warmup_ratio: float = 0.1        # linear warm-up share of the steps, then linear decay to 0
    max_grad_norm: float = 1.0       # clipping: KD on fresh students spikes early
    ema: float = 0.0                 # keep an exponential moving average of the trained weights (this decay per
                                     # step; 0.99 averages about the last 100 steps) instead of the last step's: 0 = off
    precision: str = "auto"          # bf16 autocast where the CPU/GPU has native bf16 math (fp32 master weights), else fp32
    dropout: float | None = None     # dropout rate while training (None: the model's own); masks cost a tenth of a CPU step
    transfer: str = "train"          # KD sentences: "train" (what the teacher learned from), "unused" (training rows the
                                     # recipe's train_samples left out: the teacher's soft labels there are beliefs, not
                                     # memory), "all" (both); "unused" falls back to "train" when nothing was left out
    augment: int = 0                 # teacher-labelled variants per KD sentence (words swapped for embedding neighbours,
                                     # TinyBERT-style): the student sees the teacher's function beyond the training
                                     # phrases; each copy is one more pass of KD steps and teacher logits
    augment_words: float = 0.3       # share of a variant's swappable words that are swapped (at least one)
    augment_neighbours: int = 10     # a word is swapped for one of its this many nearest whole-word pieces
    label_steps: int = 0             # after KD, this many more steps on the gold labels alone (alpha 0, the KD sentences
                                     # without their variants, which carry no label): a short final fine-tune on labels
                                     # (TinyBERT's last stage); 0 = off
    label_learning_rate: float = 2e-5  # that fine-tune's peak learning rate (same warm-up and linear decay as KD)

    def __post_init__(self):
        check_precision(self.precision, self.dropout)
        check_kd_loss(self.kd_loss)
        if self.transfer not in ("train", "unused", "all"):
            raise ValueError(f"transfer must be train, unused or all, got {self.transfer!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be >= 0, got {self.freeze_layers}")
        if self.min_words < 0:
            raise ValueError(f"min_words must be >= 0, got {self.min_words}")
        if self.augment < 0 or not 0 < self.augment_words <= 1 or self.augment_neighbours < 1:
            raise ValueError("augment must be >= 0, augment_words in (0, 1] and augment_neighbours >= 1, got "
                             f"{self.augment}, {self.augment_words}, {self.augment_neighbours}")
        if self.train_samples is not None and self.train_samples < 1:
            raise ValueError(f"train_samples must be a positive integer or null, got {self.train_samples}")
        if not 0 <= self.warmup_ratio < 1 or self.max_grad_norm <= 0 or self.weight_decay < 0:
            raise ValueError("warmup_ratio must be in [0, 1), max_grad_norm > 0 and weight_decay >= 0")
        if not 0 <= self.alpha <= 1 or self.temperature <= 0:
            raise ValueError("alpha must be in [0, 1] and temperature > 0")
        if self.label_steps < 0 or self.label_learning_rate <= 0:
            raise ValueError(f"label_steps must be >= 0 and label_learning_rate > 0, got {self.label_steps}, "
                             f"{self.label_learning_rate}")


def train_steps(n_examples: int, cfg: TrainConfig) -> int:
    n = min(n_examples, cfg.train_samples or n_examples) * (1 + cfg.augment)
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * n / cfg.batch_size))


def sentence_passes(cfg: TrainConfig, n_train: int) -> float:
    """How many sentences a KD run pushes through the model (a Step's declared ``work``)."""
    if getattr(cfg, "recovery", True) is False:
        return 0.0
    return float((train_steps(max(n_train, 1), cfg) + cfg.label_steps) * cfg.batch_size)


def long_phrases(texts: list[str], min_words: int) -> list[int]:
    """Indices of the sentences of at least ``min_words`` whitespace-separated words."""
    return [i for i, t in enumerate(texts) if len(t.split()) >= min_words]


def kd_subset(texts: list[str], cfg: TrainConfig) -> list[int] | None:
    """The training sentences a KD run uses: those of at least ``min_words`` words, then a deterministic
    subset of ``train_samples`` of them (None: every sentence)."""
    pool = range(len(texts))
    if cfg.min_words > 0:
        pool = long_phrases(texts, cfg.min_words)
        if not pool:
            raise ValueError(f"min_words={cfg.min_words}: no training sentence is that long")
    if cfg.train_samples is not None and cfg.train_samples < len(pool):
        return sorted(random.Random(cfg.seed).sample(pool, cfg.train_samples))
    return None if len(pool) == len(texts) else list(pool)


def transfer_split(splits: dict, cfg: TrainConfig) -> str:
    """The name of the split a KD run learns from (``cfg.transfer``, where that split exists)."""
    if cfg.transfer == "train" or "unused" not in splits:
        if cfg.transfer != "train":
            log.warning("transfer=%s: the recipe trains the teacher on every training sentence; KD uses them too", cfg.transfer)
        return "train"
    return cfg.transfer


def kd_finetune(state, cfg: TrainConfig, ctx, on_step=None, after_step=None, layer_map: list[int] | None = None):
    """Fine-tune ``state.model`` against the build's teacher on its training split (in place)."""
    name = transfer_split(ctx.splits, cfg)
    if name == "all" and "all" not in ctx.splits:
        from ..data import TextData

        train, unused = ctx.splits["train"], ctx.splits["unused"]
        ctx.splits["all"] = TextData(train.texts + unused.texts, train.labels + unused.labels)
    data = labelled = ctx.splits[name]
    idx = kd_subset(data.texts, cfg)
    cached = None if cfg.hidden_weight else ctx.teacher_train_logits(idx, name)
    kd_cfg = cfg
    if cfg.augment:
        data, cached, kd_cfg = _augmented(ctx, name, data, idx, cached, cfg)
    progress = getattr(ctx, "train_step", None)
    state.model = distill(ctx.teacher, state.model, data, kd_cfg, state.tokenizer, cached,
                          ctx.recipe.dataset.max_length, layer_map, on_step, after_step, progress)
    if cfg.label_steps:
        state.model = label_finetune(state.model, labelled, idx, cfg, state.tokenizer, ctx.recipe.dataset.max_length,
                                     after_step, progress)
    return state


def label_finetune(model, data, idx: list[int] | None, cfg: TrainConfig, tokenizer, max_length: int = 128,
                   after_step=None, progress=None):
    """``cfg.label_steps`` steps of cross-entropy on the gold labels of the KD sentences (rows ``idx`` of
    ``data``; None = all), at ``cfg.label_learning_rate``: the KD loop with alpha 0, so the same batching,
    precision, freezing and masks (``after_step``). No teacher is consulted."""
    import dataclasses

    labelled = data.take(idx)
    one = dataclasses.replace(cfg, alpha=0.0, hidden_weight=0.0, max_steps=cfg.label_steps, learning_rate=cfg.label_learning_rate,
                              train_samples=None, min_words=0, augment=0, ema=0.0, label_steps=0)
    log.info("label fine-tune: %d steps at lr %g on %d labelled sentences", cfg.label_steps, cfg.label_learning_rate, len(labelled))
    zeros = torch.zeros(len(labelled), model.config.num_labels)  # the KD term's weight is 0: no teacher logits needed
    return distill(None, model, labelled, one, tokenizer, zeros, max_length, None, None, after_step, progress)


def kd_set(data, idx: list[int] | None, cfg: TrainConfig, teacher, tokenizer):
    """What a KD run with ``cfg.augment`` trains on: the KD sentences (rows ``idx`` of ``data``; None =
    all) followed by their ``cfg.augment`` variants (``augment.augment_texts``, neighbours from the
    teacher's embedding table, label ``IGNORE``); the variants alone (for the teacher to label); and
    the config that makes one pass over all of it. Returns (sentences, variants, config)."""
    import dataclasses

    from ..data import TextData
    from .augment import IGNORE, augment_texts, neighbour_table

    kd = data.take(idx)
    texts, labels = kd.texts, kd.labels
    words = {w for t in texts for w in t.split()}
    table = neighbour_table(teacher.get_input_embeddings().weight, tokenizer.get_vocab(), words | {w.lower() for w in words},
                            cfg.augment_neighbours)
    variants = augment_texts(texts, table, cfg.augment, cfg.augment_words, cfg.seed)
    return (TextData(texts + variants, labels + [IGNORE] * len(variants)), TextData(variants, [IGNORE] * len(variants)),
            dataclasses.replace(cfg, train_samples=None, min_words=0, augment=0))


def variants_key(name: str, cfg: TrainConfig) -> str:
    """What names one set of KD variants (the split, the KD subset and the augmentation settings):
    KD runs with the same key train on the same variants, so the teacher labels them once."""
    return f"{name}+aug/{cfg.augment}/{cfg.augment_words}/{cfg.augment_neighbours}/{cfg.seed}/{cfg.train_samples}/{cfg.min_words}"


def _augmented(ctx, name, data, idx, cached, cfg):
    """``kd_set`` in a build: the variants' teacher logits are cached under the KD set's settings, so
    sibling students share them. Returns (sentences, their teacher logits or None, config)."""
    key = variants_key(name, cfg)
    both, variants, one_pass = kd_set(data, idx, cfg, ctx.teacher, ctx.tokenizer)
    ctx.splits.setdefault(key, variants)
    log.info("KD on %d sentences and %d teacher-labelled variants", len(both) - len(variants), len(variants))
    if cached is not None:
        cached = torch.cat([cached[slice(None) if idx is None else idx], ctx.teacher_train_logits(None, key)])
    return both, cached, one_pass


def distill(teacher, student, data, cfg: TrainConfig, tokenizer, teacher_logits: torch.Tensor | None = None,
            max_length: int = 128, layer_map: list[int] | None = None, on_step: Callable[[int, int], None] | None = None,
            after_step: Callable[[int, int], None] | None = None, progress: Callable[[int, int], None] | None = None):
    """Train ``student`` to match ``teacher`` on ``data`` (TextData); returns the student in eval mode, on the CPU.

    ``on_step(step, total)`` runs before each forward pass (gradual pruning raises
    sparsity there); ``after_step(step, total)`` after each optimizer step (masks
    are re-applied there so pruned weights stay exactly zero); ``progress(done, total)``
    after each step (the build's progress file).
    """
    from accelerate import Accelerator

    torch.manual_seed(cfg.seed)
    use_hidden = cfg.hidden_weight > 0
    if teacher_logits is None and not use_hidden:
        teacher_logits = teacher_logits_for(teacher, tokenizer, data.texts, max_length)
    idx = kd_subset(data.texts, cfg)
    if idx is not None:
        data = data.take(idx)
        teacher_logits = teacher_logits[idx] if teacher_logits is not None else None
    enc = tokenizer(data.texts, truncation=True, max_length=max_length)
    labels = torch.tensor(data.labels)
    total = train_steps(len(labels), cfg)
    trainable = [p for p in student.parameters() if p.requires_grad]
    if cfg.freeze_embeddings:
        for p in student.get_input_embeddings().parameters():
            p.requires_grad_(False)
    if cfg.freeze_layers:
        freeze_lowest_layers(student, cfg.freeze_layers)
    cuda = torch.cuda.is_available()
    precision = training_precision(cfg.precision, "cuda" if cuda else "cpu", cuda_bf16=cuda and torch.cuda.is_bf16_supported())
    acc = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no")
    set_dropout(student, cfg.dropout)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    student, opt = acc.prepare(student, opt)
    warm = max(1, int(total * cfg.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / total))
    batches = _length_grouped_batches([len(ids) for ids in enc["input_ids"]], cfg.batch_size, total, cfg.seed)
    batches = batches[acc.process_index :: acc.num_processes]  # each process its share under `accelerate launch`
    if use_hidden:
        teacher.to(acc.device)
    if teacher is not None:  # None: a loop on cached logits or labels alone (``label_finetune``)
        teacher.eval()
    student.train()
    params = [p for p in acc.unwrap_model(student).parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params] if cfg.ema else None
    _loop(acc, student, teacher, opt, sched, batches, enc, labels, teacher_logits, tokenizer, cfg, layer_map, on_step,
          after_step, use_hidden, progress, (params, ema))
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
        if after_step is not None:  # masks of pruned weights hold on the averaged weights too
            after_step(len(batches) - 1, len(batches))
    if use_hidden:
        teacher.cpu()
    if cfg.freeze_layers:  # later steps (importance ranking, QAT) need the gradients of the blocks frozen here
        for p in trainable:
            p.requires_grad_(True)
    # without the bf16 autocast shim: the student is measured and exported in fp32
    return acc.unwrap_model(student, keep_fp32_wrapper=False).cpu().eval()


def _loop(acc, student, teacher, opt, sched, batches, enc, labels, teacher_logits, tokenizer, cfg, layer_map, on_step,
          after_step, use_hidden, progress, averaged):
    for step, idx in enumerate(tqdm(batches, desc="distill", unit="step", leave=False, disable=not acc.is_main_process)):
        batch = accepted_inputs(acc.unwrap_model(student), tokenizer.pad({k: [v[i] for i in idx] for k, v in enc.items()}, return_tensors="pt"))
        batch = {k: v.to(acc.device) for k, v in batch.items()}
        if on_step is not None:
            on_step(step, len(batches))
        with acc.autocast():
            out_s = student(**batch, output_hidden_states=use_hidden)
            if use_hidden:
                with torch.no_grad():
                    out_t = teacher(**batch, output_hidden_states=True)
                logits_t = out_t.logits
            else:
                logits_t = teacher_logits[idx].to(acc.device)
        # losses in fp32: a bf16 log-softmax of near-equal logits loses the KD signal
        loss = distill_loss(out_s.logits.float(), logits_t.float(), labels[idx].to(acc.device), cfg.alpha, cfg.temperature,
                            cfg.kd_loss)
        if use_hidden:
            mapping = [0] + [j + 1 for j in (layer_map or range(len(out_s.hidden_states) - 1))]
            loss = loss + cfg.hidden_weight * hidden_mse([h.float() for h in out_s.hidden_states],
                                                         [h.float() for h in out_t.hidden_states], mapping, batch["attention_mask"])
        acc.backward(loss)
        acc.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(step, len(batches))
        if averaged[1] is not None:
            with torch.no_grad():
                for e, p in zip(averaged[1], averaged[0]):
                    e.lerp_(p, 1 - cfg.ema)
        if progress is not None:
            progress(step + 1, len(batches))


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
