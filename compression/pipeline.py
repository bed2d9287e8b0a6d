"""The build: recipe -> fine-tuned teacher -> one folder per variant -> report.

Layout of the output folder::

    variants/
      recipe.yaml            the recipe as run
      teacher/               fine-tuned PyTorch teacher (also the reference row)
      <variant>/             model.onnx, config.json, tokenizer, compression_config.json, metrics.json
      report.md|csv|json, pareto.png
      .cache/                teacher ONNX export shared by variants

Every folder is built under ``.tmp-<name>-<pid>`` and renamed into place only
after its metrics.json is written, so a killed build never leaves a folder that
looks finished. A folder whose metrics.json carries the current fingerprint is
skipped on the next run (resume).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from . import evaluation, report
from .config import Recipe, VariantSpec, save_recipe
from .data import load_splits
from .export import export_onnx
from .quantization import StepSkipped
from .registry import chain_tags, check_against_model, get_step
from .teacher import check_base_model, check_classifier, load_classifier, resolve_base_model, train_teacher

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
REQUIRED_METRICS = ("variant", "accuracy", "latency_p50_ms", "size_mb", "fingerprint")


class BuildError(RuntimeError):
    """A precondition of the build failed; the message names the fix."""


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "huggingface_hub"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def is_finished(folder: Path, fingerprint: str) -> bool:
    m = folder / "metrics.json"
    try:
        metrics = json.loads(m.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    fmt = evaluation.variant_format(folder)
    return (
        all(k in metrics for k in REQUIRED_METRICS)
        and metrics["fingerprint"] == fingerprint
        and (folder / evaluation.MODEL_FILES[fmt]).is_file()
    )


def _publish_atomically(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def check_output_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise BuildError(f"output folder {out_dir} is not writable ({exc.strerror}); pass --out to a writable folder") from None


@dataclass
class ChainState:
    """What PyTorch steps pass along: the model and the tokenizer that feeds it."""

    model: object
    tokenizer: object
    touched: bool = False
    notes: dict = field(default_factory=dict)  # facts steps report (real sparsity, coverage...) -> metrics.json


class BuildContext:
    """What steps may need beyond their config: data, tokenizer, teacher."""

    def __init__(self, recipe: Recipe, out_dir: Path, splits, teacher, tokenizer):
        self.recipe, self.out_dir, self.splits = recipe, out_dir, splits
        self.teacher, self.tokenizer = teacher, tokenizer
        self._teacher_onnx: Path | None = None
        self._train_logits = None
        self.prefix_cache: dict[str, ChainState] = {}  # PyTorch state after a chain prefix

    def teacher_train_logits(self):
        """Teacher logits on the training split, computed once per build for every KD step."""
        if self._train_logits is None:
            from .distillation import teacher_logits_for

            self._train_logits = teacher_logits_for(self.teacher, self.tokenizer, self.splits["train"].texts, self.recipe.dataset.max_length)
        return self._train_logits

    def teacher_onnx(self, fingerprint: str) -> Path:
        """Export the teacher once per build and share it between variants."""
        if self._teacher_onnx is None:
            cache = self.out_dir / ".cache"
            cache.mkdir(exist_ok=True)
            path = cache / f"teacher-{fingerprint}.onnx"
            if not path.is_file():
                tmp = cache / f".tmp-{os.getpid()}.onnx"
                export_onnx(self.teacher, tmp)
                os.replace(tmp, path)
            self._teacher_onnx = path
        return self._teacher_onnx

    def calibration_inputs(self, onnx_path: Path, n: int) -> dict[str, list]:
        import onnx

        names = {i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input}
        texts = self.splits["train"].subset(n, self.recipe.dataset.seed + 1).texts
        enc = self.tokenizer(texts, truncation=True, max_length=self.recipe.dataset.max_length)
        return {k: list(v) for k, v in enc.items() if k in names}


def teacher_fingerprint(recipe: Recipe) -> str:
    return VariantSpec("teacher", ()).fingerprint(recipe)


def preflight(recipe: Recipe, out_dir: Path, base_dir: Path | None = None, splits=None):
    """Everything that can be checked before training: output dir, model, data."""
    check_output_dir(out_dir)
    base = resolve_base_model(recipe.base_model)
    model_config = check_base_model(base)
    if recipe.teacher.skip:
        check_classifier(base, model_config)
    for variant in recipe.variants:
        check_against_model(variant, model_config)
    if splits is None:
        splits = load_splits(recipe.dataset, base_dir, recipe.evaluation.ood_path, recipe.evaluation.ood_samples)
    return base, splits


def build(recipe: Recipe, out_dir: str | Path, only: list[str] | None = None, base_dir: Path | None = None,
          force: bool = False, splits=None) -> dict:
    """Build (or resume) every variant of ``recipe`` into ``out_dir``; returns the report summary.

    ``splits`` ({"train", "eval"} TextData) replaces loading ``recipe.dataset``
    (``optimize`` passes its own calibration/evaluation data)."""
    out_dir = Path(out_dir)
    if only:
        for name in only:
            recipe.variant(name)  # unknown names fail before any work
    base, splits = preflight(recipe, out_dir, base_dir, splits)
    for stale in out_dir.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    save_recipe(recipe, out_dir / "recipe.yaml")
    cfg = recipe.evaluation

    teacher, tokenizer = _teacher(recipe, base, splits, out_dir, force)
    reference, ood_reference = _references(teacher, tokenizer, splits, recipe)
    ctx = BuildContext(recipe, out_dir, splits, teacher, tokenizer)

    todo = [v for v in recipe.variants if not only or v.name in only]
    for spec in tqdm(todo, desc="variants", unit="variant"):
        fp = spec.fingerprint(recipe)
        final = out_dir / spec.name
        if not force and is_finished(final, fp):
            log.info("%s: finished earlier, skipping (delete the folder or pass --force to rebuild)", spec.name)
            continue
        tmp = out_dir / f".tmp-{spec.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        log.info("%s: %s", spec.name, " -> ".join(c.name for c in spec.steps))
        try:
            fmt, model_config, chain_tokenizer, notes = run_chain(spec, ctx, tmp)
        except StepSkipped as exc:
            log.warning("%s: %s", spec.name, exc)
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        write_variant_files(tmp, spec, recipe, base, fmt, model_config, chain_tokenizer)
        runner = evaluation.load_runner(tmp, cfg.threads, recipe.dataset.max_length)
        metrics, _, _ = evaluation.measure(runner, splits["eval"].texts, splits["eval"].labels, cfg, reference,
                                           splits.get("ood"), ood_reference)
        metrics.update(notes)
        metrics.update(variant=spec.name, fingerprint=fp, steps=[c.name for c in spec.steps], tags=chain_tags(spec))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        del runner
        _publish_atomically(tmp, final)
        log.info("%s: accuracy %.4f, p50 %.2f ms, %.1f MB", spec.name, metrics["accuracy"], metrics["latency_p50_ms"], metrics["size_mb"])
    return report.write_report(out_dir, recipe.evaluation.recommend_tolerance)


def _references(teacher, tokenizer, splits, recipe):
    """The teacher's predictions on the evaluation (and out-of-domain) sentences: what agreement is measured against."""
    runner = evaluation.TorchRunner(teacher, tokenizer, recipe.evaluation.accuracy_threads or os.cpu_count() or 1,
                                    recipe.dataset.max_length)
    multi = evaluation.is_multi_label(teacher.config)
    ref = evaluation.predictions(runner.logits(splits["eval"].texts), multi)
    ood = evaluation.predictions(runner.logits(splits["ood"].texts), multi) if "ood" in splits else None
    return ref, ood


def _teacher(recipe, base, splits, out_dir, force):
    """Train the teacher or reuse a finished one; the teacher folder is a row too."""
    fp = teacher_fingerprint(recipe)
    final = out_dir / "teacher"
    if not force and is_finished(final, fp):
        log.info("teacher: finished earlier, reusing %s", final)
        return load_classifier(str(final))
    tmp = out_dir / f".tmp-teacher-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model, tokenizer = train_teacher(base, splits["train"], recipe.dataset, recipe.teacher, tmp / "trainer")
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    cc = _compression_config("teacher", [], recipe, base, evaluation.FORMAT_TORCH)
    (tmp / "compression_config.json").write_text(json.dumps(cc, indent=2))
    cfg = recipe.evaluation
    runner = evaluation.TorchRunner(model, tokenizer, cfg.threads, recipe.dataset.max_length, tmp / "model.safetensors")
    metrics, _, _ = evaluation.measure(runner, splits["eval"].texts, splits["eval"].labels, cfg, ood=splits.get("ood"))
    metrics.update(variant="teacher", fingerprint=fp, agreement=1.0, steps=[], tags=["pytorch", "fp32"])
    if "ood" in splits:
        metrics["ood_agreement"] = 1.0
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _publish_atomically(tmp, final)
    log.info("teacher: accuracy %.4f", metrics["accuracy"])
    return model, tokenizer


def run_chain(spec: VariantSpec, ctx: BuildContext, tmp: Path):
    """Apply the steps in order; returns (format, final model config, tokenizer)."""
    state, stage = ChainState(None, ctx.tokenizer), "torch"
    onnx_path = tmp / "model.onnx"
    for i, call in enumerate(tqdm(spec.steps, desc=spec.name, unit="step", leave=False)):
        step = get_step(call.name)
        if step.stage in ("torch", "terminal"):
            # chains sharing a trained prefix (distilled-L3 / distilled-L3-int8) train it once
            key = json.dumps([c.to_obj() for c in spec.steps[: i + 1]], sort_keys=True)
            if key in ctx.prefix_cache:
                log.info("%s: reusing the result of %s", spec.name, " -> ".join(c.name for c in spec.steps[: i + 1]))
                state = copy.deepcopy(ctx.prefix_cache[key])
            else:
                if state.model is None:
                    state.model = copy.deepcopy(ctx.teacher)
                state = step.apply(state, call.config, ctx)
                state.touched = True
                if step.stage == "torch":
                    ctx.prefix_cache[key] = copy.deepcopy(state)
            stage = step.stage
            continue
        if stage == "torch":  # entering ONNX: export what we have
            if state.touched:
                export_onnx(state.model, onnx_path)
            else:
                shutil.copyfile(ctx.teacher_onnx(teacher_fingerprint(ctx.recipe)), onnx_path)
            stage = "onnx"
        step.apply(onnx_path, call.config, ctx)
    if stage == "terminal" and getattr(state.model, "is_loaded_in_8bit", False):  # bitsandbytes
        state.model.save_pretrained(tmp)
        return evaluation.FORMAT_TORCH, state.model.config, state.tokenizer, state.notes
    if stage == "terminal":
        import torch

        torch.save(state.model.state_dict(), tmp / evaluation.MODEL_FILES[evaluation.FORMAT_TORCH_INT8])
        return evaluation.FORMAT_TORCH_INT8, state.model.config, state.tokenizer, state.notes
    if stage == "torch":  # PyTorch-only chains still ship an ONNX model
        export_onnx(state.model, onnx_path)
    return evaluation.FORMAT_ONNX, (state.model or ctx.teacher).config, state.tokenizer, state.notes


def _compression_config(name, steps, recipe, base, fmt) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "variant": name,
        "format": fmt,
        "model_file": evaluation.MODEL_FILES[fmt],
        "base_model": base,
        "steps": steps,
        "recipe": recipe.to_dict(),
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_variant_files(tmp: Path, spec: VariantSpec, recipe: Recipe, base: str, fmt: str, model_config, tokenizer) -> None:
    model_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    cc = _compression_config(spec.name, [c.to_obj() for c in spec.steps], recipe, base, fmt)
    cc["fingerprint"] = spec.fingerprint(recipe)
    (tmp / "compression_config.json").write_text(json.dumps(cc, indent=2))


def evaluate_dir(out_dir: str | Path, base_dir: Path | None = None) -> dict:
    """Re-measure the teacher and every variant in one run, then rewrite the report."""
    from .config import load_recipe

    out_dir = Path(out_dir)
    recipe_path = out_dir / "recipe.yaml"
    if not recipe_path.is_file():
        raise BuildError(f"{out_dir}: no recipe.yaml; this is not a build output folder")
    recipe = load_recipe(recipe_path)
    cfg = recipe.evaluation
    splits = load_splits(recipe.dataset, base_dir, cfg.ood_path, cfg.ood_samples)
    folders = [f for f in sorted(out_dir.iterdir()) if f.is_dir() and (f / "metrics.json").is_file() and not f.name.startswith(".")]
    folders.sort(key=lambda f: f.name != "teacher")
    reference = ood_reference = None
    for folder in tqdm(folders, desc="evaluate", unit="variant"):
        old = json.loads((folder / "metrics.json").read_text())
        runner = evaluation.load_runner(folder, cfg.threads, recipe.dataset.max_length)
        metrics, logits, ood_logits = evaluation.measure(runner, splits["eval"].texts, splits["eval"].labels, cfg, reference,
                                                         splits.get("ood"), ood_reference)
        if folder.name == "teacher":
            multi = evaluation.is_multi_label(runner.config)
            reference = evaluation.predictions(logits, multi)
            metrics["agreement"] = 1.0
            if ood_logits is not None:
                ood_reference = evaluation.predictions(ood_logits, multi)
                metrics["ood_agreement"] = 1.0
        for key, value in old.items():  # keep build-time facts (steps, notes) not re-measured
            metrics.setdefault(key, value)
        tmp = folder / ".metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2))
        os.replace(tmp, folder / "metrics.json")
    return report.write_report(out_dir, cfg.recommend_tolerance)
