"""Bring your own classifier: optimize an already fine-tuned model, and compare variants.

``optimize`` writes a real recipe (``teacher.skip``, the calibration and evaluation
files as absolute paths) and runs the same build as ``build``, so its folders are the
same format, ``evaluate`` re-measures them, and the recipe beside them reloads
identically. Without evaluation data, quality is agreement with the original: the
built-in probe sentences are saved with the original's predictions as labels
(``probe.jsonl`` in the output folder) and the report names that file.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from .build import build
from .config import DatasetConfig, EvalConfig, TeacherConfig, VariantSpec
from .errors import ArtifactError, ModelError, RecipeError
from .loader import load_runner
from .metrics import predictions, same_prediction
from .modeling import check_base_model, check_classifier, load_classifier, load_tokenizer, num_layers
from .recipe import Recipe
from .registry import chain_needs_data, check_chain, not_applicable, parse_step
from .runtime import TorchRunner, is_multi_label, time_forward, timed_logits

log = logging.getLogger(__name__)
PROBE = [
    "a gripping , beautifully acted film .", "it never comes together .", "not bad at all , actually .",
    "the worst thing i have read this year", "an absolute delight from start to finish", "meh .",
    "you are a wonderful person", "this is garbage and so are you", "please cancel my order",
    "what time does the store open tomorrow ?", "i love how fast the delivery was", "never buying here again",
] * 4
PROBE_FILE = "probe.jsonl"
RECOVERY_STEPS = 200  # KD recovery budget for pruning/QAT of a user's model: minutes on a CPU, not hours
NAMED_VARIANTS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8-emb4", "torch-int8", "bnb-int8", "pruned",
                  "pruned-int8", "thresholded", "distilled-half", "qat-int8")


def variant_steps(name: str, pruning_amount: float | None, threshold: float | None, has_train: bool, n_layers: int) -> list:
    """Named variants of ``optimize`` -> recipe steps."""
    recover = {"recovery": has_train, "max_steps": RECOVERY_STEPS}
    amount = pruning_amount if pruning_amount is not None else 0.3
    table = {
        "fp32": ["export"],
        "fp16": ["export", "fp16"],
        "int8-dynamic": ["export", "quantize_dynamic"],
        "int8-static": ["export", "quantize_static"],
        "int8-emb4": ["export", "quantize_dynamic", "quantize_embeddings_4bit"],
        "torch-int8": ["torch_dynamic_int8"],
        "bnb-int8": ["bnb_int8"],
        "pruned": [{"prune": {"amount": amount, **recover}}],
        "pruned-int8": [{"prune": {"amount": amount, **recover}}, "quantize_dynamic"],
        "thresholded": [{"threshold": {"threshold": threshold if threshold is not None else 1e-3}}],
        "distilled-half": [{"distill": {"num_layers": max(1, n_layers // 2), "epochs": 1}}],
        "qat-int8": [{"qat": {"max_steps": RECOVERY_STEPS}}],
    }
    if name not in table:
        raise RecipeError(f"unknown variant {name!r}; optimize knows {list(NAMED_VARIANTS)}")
    return table[name]


def _probe_file(model: str, out_dir: Path, text_column: str, label_column: str) -> Path:
    """The probe sentences labelled with the original model's own predictions."""
    original, tok = load_classifier(model)
    multi = is_multi_label(original.config)
    labels = predictions(TorchRunner(original, tok).served_logits(PROBE), multi).tolist()
    path = out_dir / PROBE_FILE
    path.write_text("".join(json.dumps({text_column: t, label_column: y}) + "\n" for t, y in zip(PROBE, labels)))
    return path


def make_recipe(model: str, variants=("fp32", "fp16", "int8-dynamic"), pruning_amount: float | None = None,
                threshold: float | None = None, calibration_data: str | None = None, eval_data: str | None = None,
                text_column: str = "sentence", label_column: str = "label", mobile: bool = False,
                evaluation: EvalConfig | None = None, n_layers: int = 2, model_config=None) -> Recipe:
    """The recipe ``optimize`` runs (``eval_data`` None: the caller writes the probe file there first)."""
    if pruning_amount is not None and not 0 <= pruning_amount < 1:
        raise RecipeError(f"pruning_amount must be in [0, 1), got {pruning_amount}")
    if threshold is not None and threshold < 0:
        raise RecipeError(f"threshold must be >= 0, got {threshold}")
    variants = list(variants)
    if pruning_amount is not None and not any(v.startswith("pruned") for v in variants):
        variants.append("pruned")
    if threshold is not None and "thresholded" not in variants:
        variants.append("thresholded")
    specs = []
    for name in variants:
        chain = variant_steps(name, pruning_amount, threshold, calibration_data is not None, n_layers)
        if mobile and name not in ("torch-int8", "bnb-int8"):
            chain = chain + ["mobile_ort"]
        spec = VariantSpec(name, tuple(parse_step(s, f"variant {name!r}") for s in chain))
        needs = chain_needs_data(spec)
        applies = model_config is None or not_applicable(spec, model_config) is None  # else it is skipped, data or not
        if needs and calibration_data is None and applies:
            raise RecipeError(f"variant {name!r} needs training/calibration data ({', '.join(sorted(set(needs)))}); "
                              "give calibration_data (TSV/CSV/JSONL with text and labels)")
        check_chain(spec)
        specs.append(spec)
    train_file = calibration_data or eval_data
    return Recipe(
        name="optimize", base_model=model,
        dataset=DatasetConfig(path=str(Path(train_file).resolve()) if train_file else PROBE_FILE,
                              eval_path=str(Path(eval_data).resolve()) if eval_data else None,
                              text_column=text_column, label_column=label_column),
        teacher=TeacherConfig(skip=True), evaluation=evaluation or EvalConfig(latency_runs=100, warmup=10),
        variants=tuple(specs),
    )


def optimize(model: str, out_dir, variants=("fp32", "fp16", "int8-dynamic"), pruning_amount: float | None = None,
             threshold: float | None = None, calibration_data: str | None = None, eval_data: str | None = None,
             text_column: str = "sentence", label_column: str = "label", mobile: bool = False,
             evaluation: EvalConfig | None = None) -> dict:
    """Write optimized variant folders of an already fine-tuned classifier into ``out_dir``.

    Variants whose steps cannot apply to this architecture (layer dropping on GPT-2, ...)
    are skipped with a one-line reason in ``summary["skipped"]``; the others are built."""
    for path, what in ((calibration_data, "calibration_data"), (eval_data, "eval_data")):
        if path and not Path(path).is_file():
            raise RecipeError(f"{what}: file not found: {path}")
    config = check_base_model(model)
    check_classifier(model, config)
    try:
        load_tokenizer(model)
    except Exception as exc:
        raise ModelError(f"{model}: no usable tokenizer ({type(exc).__name__}); save the tokenizer beside the model") from None
    n_layers = num_layers(config) or 2
    out_dir = Path(out_dir)
    recipe = make_recipe(model, variants, pruning_amount, threshold, calibration_data, eval_data, text_column,
                         label_column, mobile, evaluation, n_layers, config)
    if eval_data is None:  # quality = agreement with the original, on a file the recipe can name
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = str(_probe_file(model, out_dir, text_column, label_column).resolve())
        recipe = dataclasses.replace(recipe, dataset=dataclasses.replace(
            recipe.dataset, path=recipe.dataset.path if calibration_data else probe, eval_path=probe))
    return build(recipe, out_dir, skip_not_applicable=True)


def compare(original: str, variants: list[str], texts: list[str], threads: int = 1, runs: int = 50) -> dict:
    """Size, batch-1 latency, throughput and prediction differences of variants vs. the original.

    Each path is a variant folder (any format) or a transformers model folder."""
    def runner_for(path):
        if not Path(path).exists():
            raise RecipeError(f"not found: {path} (a variant folder or a model folder)")
        try:
            return load_runner(Path(path), threads)
        except ArtifactError:
            raise
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:150]})") from None

    runners = {path: runner_for(path) for path in dict.fromkeys([original, *variants])}  # every path opens before any work
    multi = is_multi_label(runners[original].config)
    rows, base_logits, base_pred = [], None, None
    for path in [original, *variants]:
        r = runners[path]
        _, per_s = timed_logits(r, texts)
        logits = r.served_logits(texts)  # predictions as served, one sentence at a time where batching would change them
        if base_logits is None:
            base_logits, base_pred = logits, predictions(logits, multi)
        times = time_forward(r, [r.encode(texts[:1])], runs, warmup=3)
        same = same_prediction(predictions(logits, multi), base_pred)
        rows.append({"model": str(path), "size_mb": round(r.model_file.stat().st_size / 1e6, 2),
                     "latency_p50_ms": round(float(np.median(times)), 3), "throughput_per_s": round(per_s, 1),
                     "agreement": float(np.mean(same)), "max_logit_diff": float(np.abs(logits - base_logits).max()),
                     "flipped": [t for t, ok in zip(texts, same) if not ok]})
    return {"sentences": len(texts), "rows": rows}
