"""Bring your own model: optimize an already fine-tuned classifier, compare variants,
and write the mobile (.ort) format.

``optimize`` builds a recipe with ``teacher.skip`` and runs the same pipeline as
``build``, so variant folders are identical in format. Without ``--eval-data``,
quality is measured as agreement with the original on a built-in probe set
(labels = the original's own predictions) and says so in metrics.json.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from . import pipeline
from .config import DatasetConfig, EvalConfig, Recipe, RecipeError, TeacherConfig, VariantSpec
from .data import TextData, read_file
from .evaluation import TorchRunner, is_multi_label, load_runner, predictions, same_prediction
from .registry import check_chain, parse_step
from .teacher import ModelError, check_base_model, check_classifier, load_classifier

log = logging.getLogger(__name__)
PROBE = [
    "a gripping , beautifully acted film .", "it never comes together .", "not bad at all , actually .",
    "the worst thing i have read this year", "an absolute delight from start to finish", "meh .",
    "you are a wonderful person", "this is garbage and so are you", "please cancel my order",
    "what time does the store open tomorrow ?", "i love how fast the delivery was", "never buying here again",
] * 4
TRAINING_STEPS = {"distill", "prune_structured", "qat", "quantize_static", "vocab_prune"}


def variant_steps(name: str, pruning_amount: float | None, threshold: float | None, has_train: bool, n_layers: int) -> list:
    """Named variants of ``optimize`` -> recipe steps."""
    recover = {"recovery": has_train, "max_steps": 200}
    table = {
        "fp32": ["export"],
        "fp16": ["export", "fp16"],
        "int8-dynamic": ["export", {"quantize_dynamic": {}}],
        "int8-static": ["export", {"quantize_static": {}}],
        "torch-int8": ["torch_dynamic_int8"],
        "bnb-int8": ["bnb_int8"],
        "pruned": [{"prune": {"amount": pruning_amount if pruning_amount is not None else 0.3, **recover}}],
        "pruned-int8": [{"prune": {"amount": pruning_amount if pruning_amount is not None else 0.3, **recover}},
                        {"quantize_dynamic": {}}],
        "thresholded": [{"threshold": {"threshold": threshold if threshold is not None else 1e-3}}],
        "distilled-half": [{"distill": {"num_layers": max(1, n_layers // 2), "epochs": 1}}],
        "qat-int8": [{"qat": {"max_steps": 200}}],
    }
    if name not in table:
        raise RecipeError(f"unknown variant {name!r}; optimize knows {sorted(table)}")
    return table[name]


def optimize(model: str, out_dir, variants=("fp32", "fp16", "int8-dynamic"), pruning_amount: float | None = None,
             threshold: float | None = None, calibration_data: str | None = None, eval_data: str | None = None,
             text_column: str = "sentence", label_column: str = "label", mobile: bool = False,
             evaluation: EvalConfig | None = None) -> dict:
    """Write optimized variant folders of an already fine-tuned classifier into ``out_dir``."""

    if pruning_amount is not None and not 0 <= pruning_amount < 1:
        raise RecipeError(f"--pruning-amount must be in [0, 1), got {pruning_amount}")
    if threshold is not None and threshold < 0:
        raise RecipeError(f"--threshold must be >= 0, got {threshold}")
    variants = list(variants)
    if pruning_amount is not None and not any(v.startswith("pruned") for v in variants):
        variants.append("pruned")
    if threshold is not None and "thresholded" not in variants:
        variants.append("thresholded")
    for path, flag in ((calibration_data, "--calibration-data"), (eval_data, "--eval-data")):
        if path and not Path(path).is_file():
            raise RecipeError(f"{flag}: file not found: {path}")
    config = check_base_model(model)
    check_classifier(model, config)
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(model)
    except Exception as exc:
        raise ModelError(f"{model}: no usable tokenizer ({type(exc).__name__}); save the tokenizer beside the model") from None
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 2
    raw = {}
    for name in variants:
        steps = variant_steps(name, pruning_amount, threshold, calibration_data is not None, n_layers)
        needs = {next(iter(s)) if isinstance(s, dict) else s for s in steps} & TRAINING_STEPS
        if needs and calibration_data is None:
            raise RecipeError(f"variant {name!r} needs training/calibration data ({', '.join(sorted(needs))}); "
                              "pass --calibration-data FILE (TSV/CSV/JSONL with text and labels)")
        raw[name] = steps
    variant_specs = tuple(VariantSpec(n, tuple(parse_step(s, f"variant {n!r}") for s in st)) for n, st in raw.items())
    cal = read_file(calibration_data, text_column, label_column) if calibration_data else None
    if eval_data:
        ev = read_file(eval_data, text_column, label_column)
        note = f"accuracy on {eval_data}"
    else:
        ev = TextData(list(PROBE), None)
        note = f"agreement with the original model on {len(PROBE)} built-in probe sentences (no --eval-data given)"
    recipe = Recipe(
        name="optimize", base_model=model,
        dataset=DatasetConfig(path=eval_data or "probe", text_column=text_column, label_column=label_column),
        teacher=TeacherConfig(skip=True), evaluation=evaluation or EvalConfig(latency_runs=100, warmup=10),
        variants=variant_specs,
    )
    for v in recipe.variants:
        check_chain(v)
    out_dir = Path(out_dir)
    if ev.labels is None:  # pseudo-labels: the original's predictions
        original, tok = load_classifier(model)
        ev = TextData(ev.texts, predictions(TorchRunner(original, tok).logits(ev.texts), is_multi_label(original.config)).tolist())
    splits = {"train": cal or ev, "eval": ev}
    summary = pipeline.build(recipe, out_dir, splits=splits)
    for row in summary["rows"]:
        folder = out_dir / row["variant"]
        m = json.loads((folder / "metrics.json").read_text())
        m["quality_measured_as"] = note
        (folder / "metrics.json").write_text(json.dumps(m, indent=2))
        if mobile and (folder / "model.onnx").is_file():
            to_ort(folder)
    return summary


def to_ort(folder: Path) -> Path:
    """Write model.ort (ORT format, reduced-operator config beside it) next to model.onnx."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    folder = Path(folder)
    work = folder / ".ort-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copy(folder / "model.onnx", work / "model.onnx")
    convert_onnx_models_to_ort(work, output_dir=work, optimization_styles=[OptimizationStyle.Fixed], enable_type_reduction=True)
    shutil.move(str(work / "model.ort"), folder / "model.ort")
    config = next(work.glob("*.config"), None)
    if config is not None:
        shutil.move(str(config), folder / "required_operators.config")
    shutil.rmtree(work)
    log.info("%s: wrote model.ort (%.1f MB) for onnxruntime-mobile", folder.name, (folder / "model.ort").stat().st_size / 1e6)
    return folder / "model.ort"


def compare(original: str, variants: list[str], texts: list[str], threads: int = 1, runs: int = 50) -> dict:
    """Size, batch-1 latency, throughput and prediction differences of variants vs. the original."""
    def runner_for(path):
        p = Path(path)
        if not p.exists():
            raise RecipeError(f"not found: {path} (a variant folder or a model folder)")
        return load_runner(p, threads)

    base = runner_for(original)
    base_logits = base.logits(texts)
    multi = is_multi_label(base.config)
    base_pred = predictions(base_logits, multi)
    rows = []
    for path in [original, *variants]:
        r = base if path == original else runner_for(path)
        t0 = time.perf_counter()
        logits = r.logits(texts)
        thr = len(texts) / (time.perf_counter() - t0)
        enc = r.encode(texts[:1])
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            r.forward(enc)
            times.append((time.perf_counter() - t) * 1e3)
        same = same_prediction(predictions(logits, multi), base_pred)
        flips = [t for t, ok in zip(texts, same) if not ok]
        size = sum(f.stat().st_size for f in Path(path).glob("*") if f.suffix in (".onnx", ".safetensors", ".pt", ".bin"))
        rows.append({"model": str(path), "size_mb": round(size / 1e6, 2), "latency_p50_ms": round(float(np.median(times)), 3),
                     "throughput_per_s": round(thr, 1), "agreement": float(np.mean(same)),
                     "max_logit_diff": float(np.abs(logits - base_logits).max()), "flipped": flips})
    return {"sentences": len(texts), "rows": rows}
