"""The build: recipe -> fine-tuned teacher -> one folder per variant -> report.

The output folder's layout belongs to :mod:`compression.artifacts`, the progress file and lock
to :mod:`compression.progress`; what each step does, how much it trains and how a terminal
step's result is saved belong to its Step. This module only runs chains in order, shares work
between them (teacher logits, the teacher's ONNX export, trained chain prefixes) and measures
each result once, through one ``_complete`` for the teacher and every variant alike.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from . import artifacts, report
from .config import VariantSpec
from .data import load_splits
from .errors import ArtifactError, BuildError, RecipeError, StepNotApplicable
from .loader import load_runner
from .metrics import interleaved_latency, measure, served
from .modeling import check_base_model, check_classifier, load_classifier, num_layers, resolve_base_model
from .progress import BuildLock, Progress
from .recipe import Recipe, load_recipe, save_recipe
from .registry import chain_tags, chain_work, get_step, not_applicable
from .runtime import OnnxRunner, TorchRunner
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
    """What steps may need beyond their config: data, tokenizer, teacher, shared caches, progress."""

    def __init__(self, recipe: Recipe, out_dir: Path, splits, teacher, tokenizer, progress: Progress | None = None):
        self.recipe, self.out_dir, self.splits = recipe, out_dir, splits
        self.teacher, self.tokenizer = teacher, tokenizer
        self.progress = progress
        self._teacher_onnx: Path | None = None
        self._train_logits: dict = {}  # split -> teacher logits (rows filled as KD runs ask for them)
        self._have: dict = {}
        self.prefix_cache: dict[str, ChainState] = {}  # PyTorch state after a chain prefix
        self.notes: dict = {}                  # the running chain's notes (onnx steps report here)
        self.chain_tokenizer = None            # the running chain's tokenizer (vocab pruning changes it)

    def train_step(self, done: int, total: int) -> None:
        """KD loops report their steps here: the progress file (and the app's bar) follow them."""
        if self.progress is not None:
            self.progress.step(done, total)

    def teacher_train_logits(self, indices: list[int] | None = None, split: str = "train"):
        """Teacher logits on a training split ("train", "unused" or "all": a tensor over all of it),
        computed once per build for every KD step, and only for the sentences some KD run asked for
        (``indices``; None = all).

        On a CPU they come from the teacher's exported fp32 ONNX graph at its served precision (the
        same numbers as PyTorch to 1e-5, 1.8x faster on 2 cores: BENCHMARKS.md); on a GPU from torch."""
        import torch

        texts = self.splits[split].texts
        if split not in self._train_logits:
            self._train_logits[split] = torch.full((len(texts), self.teacher.config.num_labels), float("nan"))
            self._have[split] = torch.zeros(len(texts), dtype=torch.bool)
        logits, have = self._train_logits[split], self._have[split]
        wanted = range(len(texts)) if indices is None else indices
        missing = [i for i in wanted if not have[i]]
        if missing:
            t0 = time.perf_counter()
            logits[missing] = self._teacher_logits([texts[i] for i in missing])
            have[missing] = True
            log.info("teacher logits on %d %s sentences in %.0f s", len(missing), split, time.perf_counter() - t0)
        return logits

    def _teacher_logits(self, texts: list[str]):
        import torch

        max_length = self.recipe.dataset.max_length
        if torch.cuda.is_available() or not (self.out_dir / artifacts.TEACHER / artifacts.TOKENIZER).is_file():
            return teacher_logits_for(self.teacher, self.tokenizer, texts, max_length)
        runner = OnnxRunner(self.teacher_onnx(), self.out_dir / artifacts.TEACHER / artifacts.TOKENIZER,
                            self.teacher.config.to_dict(), max_length, self.tokenizer.pad_token)
        return torch.from_numpy(served(runner, texts, os.cpu_count() or 1))

    def teacher_onnx(self) -> Path:
        """Export the teacher once per build and share it between variants."""
        if self._teacher_onnx is None:
            cache = self.out_dir / artifacts.CACHE
            cache.mkdir(exist_ok=True)
            path = cache / f"teacher-{teacher_fingerprint(self.recipe)}.onnx"
            if not path.is_file():
                tmp = cache / f".tmp-{os.getpid()}.onnx"
                export_onnx(self.teacher, tmp)
                os.replace(tmp, path)
            self._teacher_onnx = path
        return self._teacher_onnx

    def calibration_inputs(self, onnx_path: Path, n: int, padded: bool = False) -> dict[str, list]:
        """``n`` training sentences tokenized for the graph's inputs; ``padded``: all to one length
        (histogram calibration stacks every sentence's activations into one array)."""
        import onnx

        names = {i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input}
        texts = self.splits["train"].subset(n, self.recipe.dataset.seed + 1).texts
        tokenizer = self.chain_tokenizer or self.tokenizer  # a vocab-pruned chain calibrates with its own ids
        enc = tokenizer(texts, truncation=True, max_length=self.recipe.dataset.max_length, padding="longest" if padded else False)
        return {k: list(v) for k, v in enc.items() if k in names}


def teacher_fingerprint(recipe: Recipe) -> str:
    return VariantSpec(artifacts.TEACHER, ()).fingerprint(recipe)


def preflight(recipe: Recipe, out_dir: Path, base_dir: Path | None = None, splits=None, skip_not_applicable: bool = False):
    """Everything that can be checked before training: output dir, model, data, every chain.

    Returns (base model, its config, splits, {variant: reason} of variants that cannot apply to
    this model). Those are an error unless ``skip_not_applicable`` (optimize builds the rest)."""
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
    return base, model_config, splits, skipped


def build_order(variants: list[VariantSpec]) -> list[VariantSpec]:
    """Variants that train nothing first (a page fills with servable rows within a minute of the
    teacher), then the training chains in recipe order (shared prefixes stay together)."""
    trains = lambda v: any(get_step(c.name).work is not None for c in v.steps)  # noqa: E731
    return [v for v in variants if not trains(v)] + [v for v in variants if trains(v)]


def training_work(todo: list[VariantSpec], n_train: int, teacher_layers: int = 1) -> list[float]:
    """Each variant's own training work in build order (sentence passes x encoder layers, as the
    steps declare it); a chain prefix shared with an earlier variant is counted once."""
    seen: set = set()
    return [chain_work(spec, n_train, teacher_layers, seen) for spec in todo]


def build(recipe: Recipe, out_dir: str | Path, only: list[str] | None = None, base_dir: Path | None = None,
          force: bool = False, splits=None, skip_not_applicable: bool = False) -> dict:
    """Build (or resume) every variant of ``recipe`` into ``out_dir``; returns the report summary.

    Holds the folder's build lock throughout (a second build of the same folder stops with a
    BuildError) and keeps ``progress.json`` current; a failure is written there as one line
    before it is raised. ``splits`` ({"train", "eval"[, "ood"]} TextData) replaces loading
    ``recipe.dataset``. With ``skip_not_applicable``, variants whose steps cannot apply to this
    model are skipped with a one-line reason (listed under ``summary["skipped"]``)."""
    out_dir = Path(out_dir)
    for name in only or ():
        recipe.variant(name)  # unknown names fail before any work
    check_output_dir(out_dir)
    with BuildLock(out_dir):
        progress = None
        try:
            base, model_config, splits, skipped = preflight(recipe, out_dir, base_dir, splits, skip_not_applicable)
            artifacts.clear_stale(out_dir)
            save_recipe(recipe, out_dir / artifacts.RECIPE)
            todo = build_order([v for v in recipe.variants if (not only or v.name in only) and v.name not in skipped])
            n_train, depth = len(splits.get("train") or ()), num_layers(model_config) or 1
            teacher_work = 0.0 if recipe.teacher.skip else recipe.teacher.epochs * n_train * depth
            progress = Progress(out_dir, [v.name for v in todo], training_work(todo, n_train, depth), teacher_work)
            progress.not_applicable = dict(skipped)  # named on the page; not stages of this build
            summary = _build(recipe, out_dir, todo, base, splits, force, progress)
            summary["skipped"] = {**skipped, **summary.get("skipped", {})}
            progress.done()
            return summary
        except BaseException as exc:
            line = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:400]
            if progress is None:
                progress = Progress(out_dir, [v.name for v in recipe.variants], [0.0] * len(recipe.variants))
            progress.fail("stopped by the user" if isinstance(exc, KeyboardInterrupt) else line)
            raise


def _build(recipe, out_dir, todo, base, splits, force, progress) -> dict:
    t0 = time.perf_counter()
    teacher, tokenizer, reference, reused = _teacher(recipe, base, splits, out_dir, progress)
    progress.teacher_done(time.perf_counter() - t0, reused)
    ctx = BuildContext(recipe, out_dir, splits, teacher, tokenizer, progress)
    skipped = {}
    for spec in tqdm(todo, desc="variants", unit="variant"):
        t0 = time.perf_counter()
        fp = spec.fingerprint(recipe)
        final = out_dir / spec.name
        if not force and artifacts.is_finished(final, fp):
            log.info("%s: finished earlier, skipping (delete the folder or pass force to rebuild)", spec.name)
            progress.variant_done(spec.name, time.perf_counter() - t0, kind="reused")
            continue
        if final.exists() and (problem := artifacts.verify(final)):
            log.warning("%s: rebuilding (%s)", spec.name, problem)
        progress.begin(spec.name)
        tmp = artifacts.temp_folder(out_dir, spec.name)
        log.info("%s: %s", spec.name, " -> ".join(c.name for c in spec.steps))
        try:
            fmt, model_config, chain_tokenizer, notes = run_chain(spec, ctx, tmp)
        except StepNotApplicable as exc:
            log.warning("%s skipped: %s", spec.name, exc)
            skipped[spec.name] = str(exc)
            shutil.rmtree(tmp, ignore_errors=True)
            progress.skip(spec.name, str(exc))
            continue
        model_config.save_pretrained(tmp)
        chain_tokenizer.save_pretrained(tmp)
        metrics = _complete(tmp, final, spec.name, [c.to_obj() for c in spec.steps], fmt, fp, recipe, base, splits,
                            lambda: load_runner(tmp, recipe.evaluation.threads, recipe.dataset.max_length), reference,
                            {**notes, "tags": chain_tags(spec)})
        log.info("%s: accuracy %.4f, p50 %.2f ms, %.1f MB", spec.name, metrics["accuracy"], metrics["latency_p50_ms"],
                 metrics["size_mb"])
        progress.variant_done(spec.name, time.perf_counter() - t0)
    progress.begin("timing every row together")
    retime(out_dir, recipe, splits["eval"].texts)
    summary = report.write_report(out_dir, recipe.evaluation.recommend_tolerance, recipe.evaluation.recommend_criterion)
    summary["skipped"] = skipped
    return summary


def retime(out_dir: Path, recipe: Recipe, texts: list[str]) -> None:
    """Time every finished row again, all at one moment (``metrics.interleaved_latency``), and keep
    those latencies: a row timed alone right after it was built met the machine as it was then,
    and on a shared machine that moves by tens of percent between minutes. A row that cannot be
    opened keeps its earlier timing (a warning says which)."""
    cfg = recipe.evaluation
    runners = {}
    for folder in artifacts.list_variants(out_dir):
        try:
            runners[folder.name] = load_runner(folder, cfg.threads, recipe.dataset.max_length)
        except ArtifactError as exc:
            log.warning("%s: not re-timed (%s)", folder.name, str(exc).splitlines()[0])
    if not runners:
        return
    t0 = time.perf_counter()
    for name, lat in interleaved_latency(runners, texts, cfg).items():
        artifacts.update_metrics(out_dir / name, lat)
    log.info("timed %d rows together in %.0f s", len(runners), time.perf_counter() - t0)


def _data_name(recipe: Recipe) -> str:
    d = recipe.dataset
    return d.eval_path or f"{d.path} ({d.eval_split})"


def _complete(tmp: Path, final: Path, name: str, steps: list, fmt: str, fp: str, recipe: Recipe, base: str, splits,
              open_runner, reference: dict | None, extra: dict) -> dict:
    """Finish one folder, the teacher's or a variant's: its config, its measurement (``open_runner()``
    after the config is written) against the teacher's predictions, then ``artifacts.finish``
    (manifest, metrics.json, atomic move)."""
    artifacts.write_config(tmp, name, steps, recipe.to_dict(), base, fmt, fp)
    metrics, preds = measure(open_runner(), splits["eval"], recipe.evaluation, reference, splits.get("ood"))
    metrics.update(extra)
    metrics.update(variant=name, fingerprint=fp, steps=[next(iter(s)) for s in steps], format=fmt, eval_data=_data_name(recipe))
    return artifacts.finish(tmp, final, metrics, preds)


def _teacher_extra(splits) -> dict:
    """The teacher against itself: what every other row's comparison columns read for it."""
    extra = {"agreement": 1.0, "tags": ["pytorch", "fp32"], "delta_accuracy": 0.0, "delta_accuracy_ci95": [0.0, 0.0],
             "flips_lost": 0, "flips_gained": 0}
    if "ood" in splits:
        extra.update(ood_agreement=1.0, ood_delta_balanced_accuracy=0.0, ood_delta_balanced_accuracy_ci95=[0.0, 0.0])
    return extra


def _teacher(recipe, base, splits, out_dir, progress):
    """Train the teacher or reuse a finished one (``force`` rebuilds variants, never a finished
    teacher: delete its folder to train it again); the teacher folder is a row too.

    Returns (model, tokenizer, its predictions {"eval", "ood"}, reused?): the reference every
    variant's agreement and paired difference are measured against, made in one place."""
    fp = teacher_fingerprint(recipe)
    final = out_dir / artifacts.TEACHER
    if artifacts.is_finished(final, fp):
        preds = artifacts.read_predictions(final)
        if preds is not None:
            log.info("teacher: finished earlier, reusing %s", final)
            return (*load_classifier(str(final)), preds, True)
    progress.begin("teacher")
    tmp = artifacts.temp_folder(out_dir, artifacts.TEACHER)
    model, tokenizer = train_teacher(base, splits["train"], recipe.dataset, recipe.teacher, tmp / "trainer",
                                     callbacks=[_TrainerProgress(progress)])
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    runner = TorchRunner(model, tokenizer, recipe.evaluation.threads, recipe.dataset.max_length,
                         tmp / artifacts.MODEL_FILES[artifacts.FORMAT_TORCH])
    metrics = _complete(tmp, final, artifacts.TEACHER, [], artifacts.FORMAT_TORCH, fp, recipe, base, splits, lambda: runner, None,
                        _teacher_extra(splits))
    log.info("teacher: accuracy %.4f", metrics["accuracy"])
    return model, tokenizer, artifacts.read_predictions(final), False


def _TrainerProgress(progress: Progress):
    """A transformers TrainerCallback that reports the teacher's steps to the progress file."""
    from transformers import TrainerCallback

    class Callback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress.step(state.global_step, state.max_steps)

    return Callback()


def run_chain(spec: VariantSpec, ctx: BuildContext, tmp: Path):
    """Apply the steps in order; returns (format, final model config, tokenizer, notes)."""
    state, stage = ChainState(None, ctx.tokenizer), "torch"
    ctx.notes, ctx.chain_tokenizer = state.notes, None  # onnx steps report facts here too (static int8's worst ops)
    onnx_path = tmp / artifacts.MODEL_FILES[artifacts.FORMAT_ONNX]
    last_torch_step = None
    for i, call in enumerate(tqdm(spec.steps, desc=spec.name, unit="step", leave=False)):
        step = get_step(call.name)
        if step.stage in ("torch", "terminal"):
            # chains sharing a trained prefix (distilled-L3 / distilled-L3-int8) train it once
            key = json.dumps([c.to_obj() for c in spec.steps[: i + 1]], sort_keys=True)
            if key in ctx.prefix_cache:
                log.info("%s: reusing the result of %s", spec.name, " -> ".join(c.name for c in spec.steps[: i + 1]))
                state = copy.deepcopy(ctx.prefix_cache[key])
                ctx.notes = state.notes
            else:
                if state.model is None:
                    state.model = copy.deepcopy(ctx.teacher)
                state = step.apply(state, call.config, ctx)
                state.touched = True
                ctx.notes = state.notes
                if step.stage == "torch":
                    ctx.prefix_cache[key] = copy.deepcopy(state)
            stage, last_torch_step = step.stage, step
            continue
        if stage == "torch":  # entering ONNX: export what we have
            _export(state, spec, ctx, onnx_path)
            stage = "onnx"
            ctx.chain_tokenizer = state.tokenizer
        step.apply(onnx_path, call.config, ctx)
    if stage == "terminal":
        fmt = last_torch_step.save(state, tmp)
        return fmt, state.model.config, state.tokenizer, state.notes
    if stage == "torch":  # PyTorch-only chains still ship an ONNX model
        _export(state, spec, ctx, onnx_path)
    return artifacts.FORMAT_ONNX, (state.model or ctx.teacher).config, state.tokenizer, state.notes


def _export(state: ChainState, spec: VariantSpec, ctx: BuildContext, onnx_path: Path) -> None:
    if not state.touched:
        shutil.copyfile(ctx.teacher_onnx(), onnx_path)
        return
    export_onnx(state.model, onnx_path)
    for call in spec.steps:  # fix-ups steps ask for once their model is a graph (QAT folds int8 weights)
        hook = get_step(call.name).after_export
        if hook is not None:
            hook(onnx_path)


def _saved_recipe(out_dir: Path) -> Path:
    """The recipe a build saved in its folder; one line naming the folder when it is not a build folder."""
    recipe_path = out_dir / artifacts.RECIPE
    if not recipe_path.is_file():
        raise BuildError(f"{out_dir}: no {artifacts.RECIPE}; this is not a build folder")
    return recipe_path


def evaluate_dir(out_dir: str | Path, base_dir: Path | None = None) -> dict:
    """Re-measure the teacher and every variant in one run, then rewrite the report.

    Every folder is checked first: a truncated or corrupt file stops ``evaluate`` with one line
    naming the folder, before anything is rewritten."""
    out_dir = Path(out_dir)
    recipe_path = _saved_recipe(out_dir)
    folders = artifacts.list_variants(out_dir)
    for folder in folders:
        problem = artifacts.verify(folder)
        if problem:
            raise ArtifactError(f"{problem}; rebuild it with `build` (it will be rebuilt) or delete the folder")
    recipe = load_recipe(recipe_path)
    cfg = recipe.evaluation
    num_labels = len(artifacts.read_model_config(out_dir / artifacts.TEACHER).get("id2label") or {}) or None \
        if recipe.teacher.skip else None
    splits = load_splits(recipe.dataset, base_dir, cfg.ood_path, cfg.ood_samples, num_labels)
    reference = None
    for folder in tqdm(folders, desc="evaluate", unit="variant"):
        runner = load_runner(folder, cfg.threads, recipe.dataset.max_length)
        metrics, preds = measure(runner, splits["eval"], cfg, reference, splits.get("ood"), timing=False)  # retime below
        if folder.name == artifacts.TEACHER:
            reference = preds
            metrics.update(_teacher_extra(splits))
        metrics["eval_data"] = _data_name(recipe)
        artifacts.update_metrics(folder, metrics, preds)
    retime(out_dir, recipe, splits["eval"].texts)
    return report.write_report(out_dir, cfg.recommend_tolerance, cfg.recommend_criterion)


def report_dir(out_dir: str | Path, tolerance: float | None = None, criterion: str | None = None) -> dict:
    """Rewrite the report from the rows already measured (no re-measuring: seconds), with the saved
    recipe's recommendation rule or the ``tolerance`` / ``criterion`` given, to see what another
    accuracy budget recommends. The rule applied is stated in report.md and report.json."""
    out_dir = Path(out_dir)
    cfg = load_recipe(_saved_recipe(out_dir)).evaluation
    try:  # EvalConfig checks the rule given as it checks a recipe's
        cfg = replace(cfg, recommend_tolerance=cfg.recommend_tolerance if tolerance is None else tolerance,
                      recommend_criterion=cfg.recommend_criterion if criterion is None else criterion)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    return report.write_report(out_dir, cfg.recommend_tolerance, cfg.recommend_criterion)

