"""Configuration dataclasses: the leaves every other module may import.

Frozen, documented, validated in ``__post_init__``; they import nothing of the code
that uses them. Recipes (``compression.recipe``) are assembled from them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .errors import RecipeError
from .machine import PRECISIONS


def from_mapping(cls, data: Any, where: str):
    """Build a frozen config dataclass from a mapping, rejecting unknown keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of options, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(
            f"{where}: unknown option(s) {unknown}; valid options are {sorted(names)}"
        )
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: {exc}") from exc


def check_precision(precision: str, dropout: float | None) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if dropout is not None and not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1) or null, got {dropout!r}")


@dataclass(frozen=True)
class DatasetConfig:
    """Where the labelled text comes from.

    Fields:
        path: ``glue/sst2`` (or any Hub dataset id, ``name/config``) or a local
            folder holding ``{split}.tsv|csv|jsonl`` or a single local file.
        eval_path: optional separate local file for evaluation.
        text_column / label_column: column names in the data.
        train_split / eval_split: split names (file stems for local folders).
        train_samples / eval_samples: deterministic random subset sizes (None = all).
        label_names: human label names, index = class id (None = LABEL_i).
        max_length: tokenizer truncation length.
        seed: seed for subsetting.
        name / hub_id / hub_config / task / tags: how cards, reports and the app name this
            data (e.g. "GLUE SST-2", "nyu-mll/glue", "sst2", "Sentiment classification",
            ["sentiment-analysis"]). Display only: they never change a variant's fingerprint.
            Left out, a Hub path names itself and a local file is called by its file name.
    """

    path: str = "glue/sst2"
    eval_path: str | None = None
    text_column: str = "sentence"
    label_column: str = "label"
    train_split: str = "train"
    eval_split: str = "validation"
    train_samples: int | None = None
    eval_samples: int | None = None
    label_names: tuple[str, ...] | None = None
    max_length: int = 128
    seed: int = 0
    name: str | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    task: str | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "tags", tuple(self.tags or ()))
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(self.label_names))
        for name in ("train_samples", "eval_samples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or null, got {value!r}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")


@dataclass(frozen=True)
class TeacherConfig:
    """Fine-tuning of the base model into the teacher (transformers Trainer).

    Fields: epochs, batch_size, learning_rate, weight_decay, warmup_ratio, seed,
    max_steps (overrides epochs when set), skip (use the base model as-is: it must
    already be a fine-tuned classifier), freeze_embeddings (keep the word-embedding
    table fixed: on 2 CPU cores its gradient and AdamW update are a third of every
    MiniLM step at SST-2 lengths — 209 -> 141 ms — and fine-tuning barely moves it),
    freeze_layers (also keep the lowest N transformer blocks fixed: backward stops above
    them, so each frozen block of six saves about a ninth of a CPU step), precision
    (``auto``: bf16 autocast with fp32 master weights where the CPU has native bf16 math,
    AVX512-BF16 or AMX, or the GPU supports it; else fp32), dropout (rate of every dropout
    layer while training; None keeps the base model's 0.1: dropout masks are a tenth of a
    CPU step), head_learning_rate (the randomly initialised classifier head and the pooler
    it reads learn at this rate instead of ``learning_rate``; null = one rate for all),
    layer_lr_decay (layer-wise learning-rate decay: the top transformer block learns at
    ``learning_rate``, each block below at this factor of the one above, the embeddings one
    factor under the lowest block; 1.0 = one rate for the whole encoder).
    """

    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    seed: int = 42
    max_steps: int | None = None
    skip: bool = False
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    precision: str = "auto"
    dropout: float | None = None
    head_learning_rate: float | None = None
    layer_lr_decay: float = 1.0

    def __post_init__(self):
        check_precision(self.precision, self.dropout)
        if not 0 < float(self.layer_lr_decay) <= 1:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.head_learning_rate is not None and not 0 < float(self.head_learning_rate) < 1:
            raise ValueError(f"head_learning_rate must be in (0, 1) or null, got {self.head_learning_rate}")
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be >= 0, got {self.freeze_layers}")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError("epochs must be > 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0 < float(self.learning_rate) < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")


CRITERIA = ("absolute", "relative")  # how recommend_tolerance reads: accuracy points, or a fraction of the teacher's


@dataclass(frozen=True)
class EvalConfig:
    """How variants are measured.

    Fields: threads (ORT intra-op and torch threads, fixed so rows compare),
    latency_runs / warmup (batch-1 timing), latency_sentences (distinct sentences
    cycled through), throughput_batch (batch size for throughput),
    recommend_tolerance (accuracy the recommended variant may give up vs. the teacher) and
    recommend_criterion ("absolute": that many accuracy points, 0.01 = 1 point; "relative": that
    fraction of the teacher's accuracy, 0.01 = keep 99% of it, Intel Neural Compressor's default),
    ood_path (a labelled TSV/CSV/JSONL from another domain, evaluated for every variant
    as a second accuracy column; never trained or tuned on; relative paths as dataset.path),
    ood_samples (deterministic subset of it; None = all), accuracy_threads (threads for
    the out-of-domain pass, None = all cores: it is accuracy only, and on thousands of
    sentences one thread would dominate the build's evaluation time), ood_name (how cards and
    the app name the out-of-domain set; display only), bootstrap (resamples of the paired
    bootstrap behind every "difference to the teacher" interval; 0 turns intervals off),
    throughput_sentences (evaluation sentences timed in padded batches for the throughput column),
    latency_rounds (the final timing pass of a build or ``evaluate`` splits each row's ``latency_runs``
    into this many rounds, fewer when there are fewer runs, and every round visits every row: rows are timed at one moment, so a
    shared machine slowing down for a minute slows them alike and their ratios hold).

    Accuracy is always measured as the model is served: one sentence per request, or unpadded
    equal-length batches where a test shows that gives the same answers (``runtime.served_logits``).
    """

    threads: int = 1
    latency_runs: int = 200
    warmup: int = 20
    latency_sentences: int = 50
    throughput_batch: int = 32
    recommend_tolerance: float = 0.01
    recommend_criterion: str = "absolute"
    ood_path: str | None = None
    ood_samples: int | None = None
    accuracy_threads: int | None = None
    ood_name: str | None = None
    bootstrap: int = 2000
    latency_rounds: int = 10
    throughput_sentences: int = 256

    def __post_init__(self):
        if self.bootstrap < 0 or self.throughput_sentences < 1:
            raise ValueError("bootstrap must be >= 0 and throughput_sentences >= 1")
        if self.threads < 1 or self.latency_runs < 5 or self.warmup < 0:
            raise ValueError("threads >= 1, latency_runs >= 5 and warmup >= 0 are required")
        if self.latency_rounds < 1:
            raise ValueError(f"latency_rounds must be >= 1, got {self.latency_rounds}")
        if self.recommend_criterion not in CRITERIA:
            raise ValueError(f"recommend_criterion must be one of {', '.join(CRITERIA)}, got {self.recommend_criterion!r}")
        if not 0 <= self.recommend_tolerance < 1:
            raise ValueError(f"recommend_tolerance must be in [0, 1) (0.01 = 1 point or 1%), got {self.recommend_tolerance}")
        if self.ood_samples is not None and (not isinstance(self.ood_samples, int) or self.ood_samples < 1):
            raise ValueError(f"ood_samples must be a positive integer or null, got {self.ood_samples!r}")
        if self.accuracy_threads is not None and self.accuracy_threads < 1:
            raise ValueError("accuracy_threads must be >= 1 or null")


DISPLAY_ONLY = ("name", "hub_id", "hub_config", "task", "tags")  # DatasetConfig fields that name data, not shape a model
# Step fields added after folders were built, each with the value that does what the builds did before it
# existed: at that value the field is left out of the fingerprint, so adding it rebuilds nothing.
LATER_FIELDS = {"ffn_ranking": "layer", "normalize_heads": False, "ema": 0.0, "freeze_layers": 0, "min_words": 0, "augment": 0, "augment_words": 0.3, "augment_neighbours": 10, "kd_loss": "kl", "label_steps": 0,
                "label_learning_rate": 2e-5, "reconstruct": False, "reconstruct_damp": 0.01}
TEACHER_LATER_FIELDS = {"head_learning_rate": None, "layer_lr_decay": 1.0}  # the same for the teacher's fields


@dataclass(frozen=True)
class StepCall:
    name: str
    config: Any  # a frozen config dataclass from the registry

    def to_obj(self):
        return {self.name: plain(dataclasses.asdict(self.config))}


@dataclass(frozen=True)
class VariantSpec:
    name: str
    steps: tuple[StepCall, ...]

    def fingerprint(self, recipe) -> str:
        """Changes whenever anything that shapes this variant's model changes."""
        payload = {
            "base_model": recipe.base_model,
            "dataset": {k: v for k, v in plain(dataclasses.asdict(recipe.dataset)).items() if k not in DISPLAY_ONLY},
            "teacher": _without_old_defaults(plain(dataclasses.asdict(recipe.teacher)), TEACHER_LATER_FIELDS),
            "steps": [{n: _without_old_defaults(c, LATER_FIELDS) for n, c in s.to_obj().items()} for s in self.steps],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _without_old_defaults(fields: dict, later: dict) -> dict:
    """``fields`` less each later field still at the value that behaves as before it existed."""
    return {k: v for k, v in fields.items() if k not in later or v != later[k]}


def plain(obj):
    """Tuples -> lists so YAML/JSON round-trips compare equal."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj
