"""Teacher fine-tuning through transformers' Trainer.

Trainer (not a hand loop) so ``accelerate launch -m compression build ...`` spreads
the teacher run over several GPUs, and a single GPU is used when present, with no
code change.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from .config import DatasetConfig, TeacherConfig
from .data import TextData, label_names
from .machine import training_precision
from .modeling import freeze_lowest_layers, load_classifier, load_for_finetune, set_dropout

log = logging.getLogger(__name__)
LOG_EVERY = 50  # Trainer log lines (loss, lr) every this many steps: one line a few seconds apart on CPU


def head_parameter_names(model) -> set[str]:
    """Parameters outside the pretrained encoder: the new classifier and the pooler it reads."""
    body = model.base_model_prefix + "."
    return {n for n, _ in model.named_parameters() if not n.startswith(body) or ".pooler." in n}


def layer_rate_factor(name: str, num_layers: int, decay: float) -> float:
    """An encoder parameter's share of the peak rate under layer-wise decay: 1 for the top block,
    ``decay`` per block below it, one more factor for the embeddings (everything else, the head: 1)."""
    m = re.search(r"\.encoder\.layer\.(\d+)\.", name)
    if m:
        return decay ** (num_layers - 1 - int(m.group(1)))
    return decay ** num_layers if ".embeddings." in name else 1.0


def _optimizer_with_rates(trainer, head_lr: float | None, layer_decay: float):
    """Trainer's own optimizer (its class, fused kernel, betas, eps and decay exclusions) with each parameter
    group at its own peak rate: the head at ``head_lr`` (None: the body's), the encoder's blocks and
    embeddings under ``layer_decay``; Trainer builds its warm-up/decay schedule over every group from its
    own peak rate."""
    args, model = trainer.args, trainer.model
    decay, head = set(trainer.get_decay_parameter_names(model)), head_parameter_names(model)
    layers = model.config.num_hidden_layers
    groups = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            lr = head_lr if n in head and head_lr is not None else args.learning_rate * layer_rate_factor(n, layers, layer_decay)
            groups.setdefault((lr, n in decay), []).append(p)
    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(args, model)
    return cls([{"params": ps, "lr": lr, "weight_decay": args.weight_decay if decays else 0.0}
                for (lr, decays), ps in groups.items()], **kwargs)


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, tokenizer, data: TextData, max_length: int):
        self.enc = tokenizer(data.texts, truncation=True, max_length=max_length)
        self.labels = data.labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = self.labels[i]
        return item


def train_teacher(base_model: str, train: TextData, dcfg: DatasetConfig, tcfg: TeacherConfig, work_dir: Path,
                  callbacks: list | None = None):
    """Fine-tune ``base_model`` on ``train``; returns (model, tokenizer) in eval mode, on the CPU.

    ``callbacks``: extra transformers TrainerCallbacks (the build's progress file follows the steps)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    if tcfg.skip:  # an already fine-tuned classifier: keep its head and labels as they are
        log.info("teacher.skip: using %s as the teacher without fine-tuning", base_model)
        return load_classifier(base_model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_for_finetune(base_model, label_names(dcfg, max(train.labels) + 1), device)
    if tcfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if tcfg.freeze_layers:
        freeze_lowest_layers(model, tcfg.freeze_layers, "teacher.freeze_layers")
    set_dropout(model, tcfg.dropout)
    precision = training_precision(tcfg.precision, device, cuda_bf16=device == "cuda" and torch.cuda.is_bf16_supported())
    args = TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=tcfg.epochs,
        max_steps=tcfg.max_steps or -1,
        per_device_train_batch_size=tcfg.batch_size,
        learning_rate=float(tcfg.learning_rate),
        weight_decay=tcfg.weight_decay,
        warmup_ratio=tcfg.warmup_ratio,
        lr_scheduler_type="linear",
        seed=tcfg.seed,
        save_strategy="no",
        logging_steps=LOG_EVERY,
        report_to=[],
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        group_by_length=True,  # similar lengths per batch: far less padding on SST-2's phrases
        disable_tqdm=False,
        bf16=precision == "bf16",  # autocast; the master weights and AdamW state stay fp32
        use_cpu=device == "cpu",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_Encoded(tokenizer, train, dcfg.max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=callbacks,
    )
    if tcfg.head_learning_rate is not None or tcfg.layer_lr_decay != 1.0:
        head_lr = None if tcfg.head_learning_rate is None else float(tcfg.head_learning_rate)
        trainer.optimizer = _optimizer_with_rates(trainer, head_lr, float(tcfg.layer_lr_decay))
    log.info("fine-tuning the teacher on %d examples (%s epochs, %s)", len(train), tcfg.epochs, precision)
    trainer.train()
    from accelerate.utils import extract_model_from_parallel

    # bf16 training wraps forward in an autocast-and-cast-back shim: the teacher is measured,
    # exported and copied into students as the plain fp32 model it is
    model = extract_model_from_parallel(trainer.model, keep_fp32_wrapper=False).cpu().eval()
    # freezing is how the teacher was trained, not a property of the teacher: every later step
    # (Taylor importance for pruning, students copied from its layers) needs gradients everywhere
    model.requires_grad_(True)
    return model, tokenizer
