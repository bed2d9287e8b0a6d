"""The build: recipe -> fine-tuned teacher -> one folder per variant -> report.

The output folder's layout belongs to :mod:`compression.artifacts`; what each step does,
and how a terminal step's result is saved, belongs to its Step. This module only runs
chains in order, shares work between them (teacher logits, the teacher's ONNX export,
trained chain prefixes) and measures each result once.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from . import artifacts, report
from .config import VariantSpec
from .data import load_splits
from .errors import BuildError, RecipeError, StepNotApplicable
from .metrics import measure, predictions
from .modeling import check_base_model, check_classifier, load_classifier, resolve_base_model
from .recipe import Recipe, load_recipe, save_recipe
from .registry import chain_tags, get_step, not_applicable
from .runtime import FORMAT_ONNX, FORMAT_TORCH, TorchRunner, is_multi_label
from .steps.export import export_onnx
from .steps.training import teacher_logits_for
from .teacher import train_teacher

log = logging.getLogger(__name__)


def check_output_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise BuildError(f"output folder {out_dir} is not writable ({exc.strerror}); choose a writable folder") from None


@dataclass
class ChainState:
    """What PyTorch steps pass along: the model and the tokenizer that feeds it."""

    model: object
    tokenizer: object
    touched: bool = False
    notes: dict = field(default_factory=dict)  # facts steps report (real sparsity, coverage...) -> metrics.json


class BuildContext:
    """What steps may need beyond their config: data, tokenizer, teacher, shared caches."""

    def __init__(self, recipe: Recipe, out_dir: Path, splits, teacher, tokenizer):
        self.recipe, self.out_dir, self.splits = recipe, out_dir, splits
        self.teacher, self.tokenizer = teacher, tokenizer
        self._teacher_onnx: Path | None = None
        self._train_logits = None
        self.prefix_cache: dict[str, ChainState] = {}  # PyTorch state after a chain prefix

    def teacher_train_logits(self):
        """Teacher logits on the training split, computed once per build for every KD step."""
        if self._train_logits is None:
            self._train_logits = teacher_logits_for(self.teacher, self.tokenizer, self.splits["train"].texts,
                                                    self.recipe.dataset.max_length)
        return self._train_logits

    def teacher_onnx(self) -> Path:
        """Export the teacher once per build and share it between variants."""
        if self._teacher_onnx is None:
            cache = self.out_dir / ".cache"
            cache.mkdir(exist_ok=True)
            path = cache / f"teacher-{teacher_fingerprint(self.recipe)}.onnx"
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
    return VariantSpec(artifacts.TEACHER, ()).fingerprint(recipe)


def preflight(recipe: Recipe, out_dir: Path, base_dir: Path | None = None, splits=None, skip_not_applicable: bool = False):
    """Everything that can be checked before training: output dir, model, data, every chain.

    Returns (base model, splits, {variant: reason} of variants that cannot apply to this
    model). Those are an error unless ``skip_not_applicable`` (optimize builds the rest)."""
    check_output_dir(out_dir)
    base = resolve_base_model(recipe.base_model)
    model_config = check_base_model(base)
    if recipe.teacher.skip:
        check_classifier(base, model_config)
    skipped = {}
    for variant in recipe.variants:
        reason = not_applicable(variant, model_config)
        if reason and not skip_not_applicable:
            raise RecipeError(f"variant {variant.name!r} {reason}")
        if reason:
            skipped[variant.name] = reason
            log.warning("%s skipped: %s", variant.name, reason)
    if splits is None:
        splits = load_splits(recipe.dataset, base_dir, recipe.evaluation.ood_path, recipe.evaluation.ood_samples,
                             model_config.num_labels if recipe.teacher.skip else None)
    return base, splits, skipped


def training_work(todo: list[VariantSpec], n_train: int, teacher_layers: int = 1) -> list[float]:
    """Each variant's own training work in build order: epochs x sentences x encoder layers of the
    model being trained, over its torch steps; a trained chain prefix counted once (the build trains
    a shared prefix once). Depth, not width: on SST-2's short phrases a narrow-pruned 6-layer model
    cost 6.0 ms per KD sentence and a 3-layer student 2.8 ms (demo build, 2 cores)."""
    seen, out = set(), []
    for spec in todo:
        work, depth = 0.0, teacher_layers
        for i, call in enumerate(spec.steps):
            depth = getattr(call.config, "num_layers", None) or len(getattr(call.config, "layers", None) or ()) or depth
            epochs = getattr(call.config, "epochs", None)
            key = json.dumps([c.to_obj() for c in spec.steps[: i + 1]], sort_keys=True)
            if not epochs or key in seen:
                continue
            seen.add(key)
            work += float(epochs) * min(getattr(call.config, "train_samples", None) or n_train, n_train) * depth
        out.append(work)
    return out


class Progress:
    """One log line per finished stage: elapsed time and an estimate of what is left.

    A variant's time is modelled as a fixed part (export, quantization, measurement: the mean of
    the variants that trained nothing) plus seconds per unit of training work (fitted to the
    variants that trained), so one quick int8 row does not promise that a KD run is seconds away.
    The teacher and resumed variants say nothing about a variant's time and are not fitted."""

    def __init__(self, work: list[float]):
        self.work, self.total, self.done, self.next = list(work), len(work) + 1, 0, 0
        self.start, self.fixed, self.trained = time.perf_counter(), [], []

    def finished(self, what: str, seconds: float, kind: str = "variant") -> None:
        """``kind``: "teacher", "variant" (fitted) or "reused" (finished earlier; not fitted)."""
        self.done += 1
        if kind != "teacher":
            work = self.work[self.next]
            self.next += 1
            if kind == "variant":
                (self.trained if work else self.fixed).append((seconds, work))
        log.info("[%d/%d] %s done in %.0f s; %.1f min elapsed, %s", self.done, self.total, what, seconds,
                 (time.perf_counter() - self.start) / 60, self.left())

    def left(self) -> str:
        remaining = self.work[self.next:]
        if not remaining:
            return "all stages done"
        if not (self.fixed or self.trained):
            return f"{len(remaining)} variants to go"
        fixed = sum(s for s, _ in self.fixed) / len(self.fixed) if self.fixed else 0.0
        training = sum(1 for w in remaining if w)
        if training and not self.trained:
            return (f"about {fixed * len(remaining) / 60:.1f} min left plus {training} training "
                    f"stage{'s' * (training > 1)} (estimated once one has run)")
        per_unit = sum(max(s - fixed, 0.0) for s, _ in self.trained) / sum(w for _, w in self.trained) if self.trained else 0.0
        return f"about {sum(fixed + per_unit * w for w in remaining) / 60:.1f} min left"


def build(recipe: Recipe, out_dir: str | Path, only: list[str] | None = None, base_dir: Path | None = None,
          force: bool = False, splits=None, skip_not_applicable: bool = False) -> dict:
    """Build (or resume) every variant of ``recipe`` into ``out_dir``; returns the report summary.

    ``splits`` ({"train", "eval"[, "ood"]} TextData) replaces loading ``recipe.dataset``.
    With ``skip_not_applicable``, variants whose steps cannot apply to this model are
    skipped with a one-line reason (listed under ``summary["skipped"]``)."""
    out_dir = Path(out_dir)
    for name in only or ():
        recipe.variant(name)  # unknown names fail before any work
    base, splits, skipped = preflight(recipe, out_dir, base_dir, splits, skip_not_applicable)
    artifacts.clear_stale(out_dir)
    save_recipe(recipe, out_dir / artifacts.RECIPE)
    todo = [v for v in recipe.variants if (not only or v.name in only) and v.name not in skipped]

    progress = Progress([0.0] * len(todo))
    t0 = time.perf_counter()
    teacher, tokenizer, references = _teacher(recipe, base, splits, out_dir, force)
    progress.work = training_work(todo, len(splits.get("train") or ()), getattr(teacher.config, "num_hidden_layers", 1))
    progress.finished("teacher", time.perf_counter() - t0, kind="teacher")
    reference, ood_reference = references or _references(teacher, tokenizer, splits, recipe)
    ctx = BuildContext(recipe, out_dir, splits, teacher, tokenizer)
    cfg = recipe.evaluation

    for spec in tqdm(todo, desc="variants", unit="variant"):
        t0 = time.perf_counter()
        fp = spec.fingerprint(recipe)
        final = out_dir / spec.name
        if not force and artifacts.is_finished(final, fp):
            log.info("%s: finished earlier, skipping (delete the folder or pass force to rebuild)", spec.name)
            progress.finished(f"{spec.name} (reused)", time.perf_counter() - t0, kind="reused")
            continue
        tmp = artifacts.temp_folder(out_dir, spec.name)
        log.info("%s: %s", spec.name, " -> ".join(c.name for c in spec.steps))
        try:
            fmt, model_config, chain_tokenizer, notes = run_chain(spec, ctx, tmp)
        except StepNotApplicable as exc:
            log.warning("%s skipped: %s", spec.name, exc)
            skipped[spec.name] = str(exc)
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        model_config.save_pretrained(tmp)
        chain_tokenizer.save_pretrained(tmp)
        artifacts.write_config(tmp, spec.name, [c.to_obj() for c in spec.steps], recipe.to_dict(), base, fmt, fp)
        runner = artifacts.load_runner(tmp, cfg.threads, recipe.dataset.max_length)
        metrics, _, _ = measure(runner, splits["eval"].texts, splits["eval"].labels, cfg, reference, splits.get("ood"), ood_reference)
        metrics.update(notes)
        metrics.update(variant=spec.name, fingerprint=fp, steps=[c.name for c in spec.steps], tags=chain_tags(spec),
                       eval_data=_data_name(recipe, splits))
        artifacts.write_metrics(tmp, metrics)
        del runner
        artifacts.move_into_place(tmp, final)
        log.info("%s: accuracy %.4f, p50 %.2f ms, %.1f MB", spec.name, metrics["accuracy"], metrics["latency_p50_ms"], metrics["size_mb"])
        progress.finished(spec.name, time.perf_counter() - t0)
    summary = report.write_report(out_dir, recipe.evaluation.recommend_tolerance)
    summary["skipped"] = skipped
    return summary


def _data_name(recipe: Recipe, splits) -> str:
    d = recipe.dataset
    return d.eval_path or f"{d.path} ({d.eval_split})"


def _references(teacher, tokenizer, splits, recipe):
    """The teacher's predictions on the evaluation (and out-of-domain) sentences: what agreement is measured against."""
    runner = TorchRunner(teacher, tokenizer, recipe.evaluation.accuracy_threads or os.cpu_count() or 1, recipe.dataset.max_length)
    multi = is_multi_label(teacher.config)
    ref = predictions(runner.logits(splits["eval"].texts), multi)
    ood = predictions(runner.logits(splits["ood"].texts), multi) if "ood" in splits else None
    return ref, ood


def _teacher(recipe, base, splits, out_dir, force):
    """Train the teacher or reuse a finished one; the teacher folder is a row too.

    Returns (model, tokenizer, references): the teacher's predictions on the evaluation and
    out-of-domain sentences when it was just measured, else None (a reused teacher)."""
    fp = teacher_fingerprint(recipe)
    final = out_dir / artifacts.TEACHER
    if not force and artifacts.is_finished(final, fp):
        log.info("teacher: finished earlier, reusing %s", final)
        return (*load_classifier(str(final)), None)
    tmp = artifacts.temp_folder(out_dir, artifacts.TEACHER)
    model, tokenizer = train_teacher(base, splits["train"], recipe.dataset, recipe.teacher, tmp / "trainer")
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    artifacts.write_config(tmp, artifacts.TEACHER, [], recipe.to_dict(), base, FORMAT_TORCH, fp)
    cfg = recipe.evaluation
    runner = TorchRunner(model, tokenizer, cfg.threads, recipe.dataset.max_length, artifacts.model_file(tmp))
    metrics, logits, ood_logits = measure(runner, splits["eval"].texts, splits["eval"].labels, cfg, ood=splits.get("ood"))
    metrics.update(variant=artifacts.TEACHER, fingerprint=fp, agreement=1.0, steps=[], tags=["pytorch", "fp32"],
                   eval_data=_data_name(recipe, splits))
    if "ood" in splits:
        metrics["ood_agreement"] = 1.0
    artifacts.write_metrics(tmp, metrics)
    artifacts.move_into_place(tmp, final)
    log.info("teacher: accuracy %.4f", metrics["accuracy"])
    multi = is_multi_label(model.config)
    return model, tokenizer, (predictions(logits, multi), None if ood_logits is None else predictions(ood_logits, multi))


def run_chain(spec: VariantSpec, ctx: BuildContext, tmp: Path):
    """Apply the steps in order; returns (format, final model config, tokenizer, notes)."""
    state, stage = ChainState(None, ctx.tokenizer), "torch"
    onnx_path = tmp / artifacts.MODEL_FILES[FORMAT_ONNX]
    last_torch_step = None
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
            stage, last_torch_step = step.stage, step
            continue
        if stage == "torch":  # entering ONNX: export what we have
            _export(state, spec, ctx, onnx_path)
            stage = "onnx"
        step.apply(onnx_path, call.config, ctx)
    if stage == "terminal":
        fmt = last_torch_step.save(state, tmp)
        return fmt, state.model.config, state.tokenizer, state.notes
    if stage == "torch":  # PyTorch-only chains still ship an ONNX model
        _export(state, spec, ctx, onnx_path)
    return FORMAT_ONNX, (state.model or ctx.teacher).config, state.tokenizer, state.notes


def _export(state: ChainState, spec: VariantSpec, ctx: BuildContext, onnx_path: Path) -> None:
    if not state.touched:
        shutil.copyfile(ctx.teacher_onnx(), onnx_path)
        return
    export_onnx(state.model, onnx_path)
    for call in spec.steps:  # fix-ups steps ask for once their model is a graph (QAT folds int8 weights)
        hook = get_step(call.name).after_export
        if hook is not None:
            hook(onnx_path)


def evaluate_dir(out_dir: str | Path, base_dir: Path | None = None) -> dict:
    """Re-measure the teacher and every variant in one run, then rewrite the report."""
    out_dir = Path(out_dir)
    recipe_path = out_dir / artifacts.RECIPE
    if not recipe_path.is_file():
        raise BuildError(f"{out_dir}: no {artifacts.RECIPE}; this is not a build folder")
    recipe = load_recipe(recipe_path)
    cfg = recipe.evaluation
    teacher_config = artifacts.read_json(out_dir / artifacts.TEACHER / "config.json") or {}
    num_labels = len(teacher_config.get("id2label") or {}) or None if recipe.teacher.skip else None
    splits = load_splits(recipe.dataset, base_dir, cfg.ood_path, cfg.ood_samples, num_labels)
    reference = ood_reference = None
    for folder in tqdm(artifacts.list_variants(out_dir), desc="evaluate", unit="variant"):
        old = artifacts.read_metrics(folder)
        runner = artifacts.load_runner(folder, cfg.threads, recipe.dataset.max_length)
        metrics, logits, ood_logits = measure(runner, splits["eval"].texts, splits["eval"].labels, cfg, reference,
                                              splits.get("ood"), ood_reference)
        if folder.name == artifacts.TEACHER:
            multi = is_multi_label(runner.config)
            reference = predictions(logits, multi)
            metrics["agreement"] = 1.0
            if ood_logits is not None:
                ood_reference = predictions(ood_logits, multi)
                metrics["ood_agreement"] = 1.0
        metrics["eval_data"] = _data_name(recipe, splits)
        for key, value in old.items():  # keep build-time facts (steps, notes) not re-measured
            metrics.setdefault(key, value)
        artifacts.write_metrics(folder, metrics)
    return report.write_report(out_dir, cfg.recommend_tolerance)
