"""What the app serves: a family of variants loaded once, and pure functions over it.

Free of Gradio (testable alone, reusable behind any server) and of torch/transformers:
it imports only the runtime, metrics, report and artifacts modules, so the Space installs
onnxruntime + tokenizers and nothing of the build. Every number the Compare tab shows
comes from each variant's own metrics.json, so a local folder and the Space built from
the published repos show the same table. A variant that fails to load is listed with
the reason; PyTorch reference rows are listed as references, not as failures. While a
build runs, :func:`refresh` adds each variant as its folder is finished.

Live latency: each request runs the variants one after another on one thread each, so
every variant is timed alone (``latency_ms``: this request's run). A variant's first run among
the others' pays 9-57% over the same model run back to back (BENCHMARKS.md, interleave.py), so the
number the page ranks by, ``live_ms``, comes from the warm timer: after each answer, while no
request runs, it times every variant alone on the latest sentences, one untimed run then
``WARM_RUNS`` timed ones back to back, and shows the median of its latest ``LIVE_WINDOW`` timed
runs. It runs outside the request path and yields to any request between two forward passes.
"""
from __future__ import annotations

import logging
import statistics
import threading
import time
import unicodedata
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import artifacts
from .data import read_file
from .metrics import predictions, same_prediction, softmax
from .report import accuracy_rule, pareto_front
from .report import recommend as recommend_row
from .runtime import OnnxRunner, id2label, is_multi_label, time_forward, timed_forward, timed_logits

log = logging.getLogger(__name__)
MAX_CHARS = 2000        # longer input is cut (the tokenizer keeps 128 tokens anyway)
MAX_BATCH_ROWS = 500    # batch tab cap: beyond this the demo would hog a shared CPU
REFERENCE = "fp32"      # the fp32 teacher exported to ONNX: identical predictions to PyTorch
LIVE_WINDOW = 20        # the live latency is the median of a variant's latest warm timed passes
WARM_RUNS = 2           # warm timer: timed runs per variant per sample, after one untimed run (the first
                        # repeat already recovers most of what interleaving costs: BENCHMARKS.md, interleave.py)
WARM_IDLE_S = 0.01      # warm timer: wait this long after an answer, then sample while no request runs


@dataclass
class Variant:
    name: str
    runner: OnnxRunner
    size_mb: float
    metrics: dict
    hub_repo: str | None = None
    stamp: float = 0.0  # metrics.json's mtime when loaded: a rebuilt folder is reloaded
    times: deque = field(default_factory=lambda: deque(maxlen=LIVE_WINDOW))  # requests' own runs
    warm: deque = field(default_factory=lambda: deque(maxlen=LIVE_WINDOW))   # warm timer's timed passes

    def live_ms(self) -> float | None:
        """Median of the latest warm passes; before the first, of the requests' own runs."""
        samples = self.warm or self.times
        return statistics.median(samples) if samples else None


class Gate:
    """Requests first: the warm timer runs one forward pass at a time, and only while no request
    runs; a request waits at most for the one pass in flight."""

    def __init__(self):
        self.cond = threading.Condition()
        self.active = 0         # requests running or waiting for the pass in flight
        self.sampling = False   # a warm-timer pass is running

    def __enter__(self):
        with self.cond:
            self.active += 1  # counted before waiting: the timer's next try_sample sees it and stops
            while self.sampling:
                self.cond.wait()

    def __exit__(self, *exc):
        with self.cond:
            self.active -= 1
            self.cond.notify_all()

    def try_sample(self) -> bool:
        with self.cond:
            if self.active:
                return False
            self.sampling = True
            return True

    def sampled(self) -> None:
        with self.cond:
            self.sampling = False
            self.cond.notify_all()


@dataclass
class VariantFamily:
    """The served variants, those that could not be served (name -> reason), and every row's metrics."""

    variants: dict[str, Variant] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)  # measured rows that are not served (PyTorch)
    rows: list[dict] = field(default_factory=list)
    recommended: str | None = None
    pareto: set[str] = field(default_factory=set)  # rows on the accuracy/latency/size front
    data: dict = field(default_factory=dict)        # what the numbers were measured on (artifacts.data_description)
    rule: tuple = (0.01, "absolute")                # the recipe's recommend_tolerance and recommend_criterion
    folder: Path | None = None
    stamps: dict[str, float] = field(default_factory=dict)  # metrics.json mtimes seen by refresh()
    version: int = 0  # bumped by refresh() on every change: each page compares it with the one it shows
    threads: int = 1
    pool: ThreadPoolExecutor | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: Gate = field(default_factory=Gate)
    answered: threading.Event = field(default_factory=threading.Event)  # set after each answer: the warm timer's cue
    recent: deque = field(default_factory=lambda: deque(maxlen=WARM_RUNS + 1))  # latest requests' encodings, per tokenizer
    sweep_inputs: list = field(default_factory=list)  # the warm timer's sentences until its sweep is complete
    sweep_todo: list = field(default_factory=list)    # variants the current warm sweep has still to time

    @property
    def reference(self) -> str | None:
        """The fp32 graph, under its own name or its Hub repo's (a Space); else the first variant loaded."""
        for name in self.variants:
            if _built_as(self.variants[name].metrics, name) == REFERENCE:
                return name
        return next(iter(self.variants), None)

    @property
    def names(self) -> list[str]:
        return list(self.variants)

    def map(self, fn, items):
        """Run ``fn`` over ``items`` on the shared pool: ORT releases the GIL, so batch work uses every core."""
        import os

        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="variant")
        return list(self.pool.map(fn, items))


def _download(repo: str) -> Path:
    """The files of a variant repo that serving needs (``artifacts.hub_files`` of its format)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    cc = Path(hf_hub_download(repo, artifacts.CONFIG))
    fmt = (artifacts.read_json(cc) or {}).get("format", artifacts.FORMAT_ONNX)
    return Path(snapshot_download(repo, allow_patterns=artifacts.hub_files(fmt)))


def _built_as(metrics: dict, name: str) -> str:
    """The variant name a row was built under: a Space shows each row under its Hub repo's name
    (``me/minilm-sst2-fp32`` -> ``minilm-sst2-fp32``) and keeps the build's own name in ``built_as``."""
    return metrics.get("built_as") or name


def recommend(rows: list[dict], tolerance: float = 0.01, criterion: str = "absolute") -> str | None:
    """The recommended row: the report's flag when the rows carry it (a local build), else the
    report's own rule applied to these rows (a Space, or a build still running), which finds the
    teacher by the name it was built under."""
    flagged = [r["variant"] for r in rows if r.get("recommended")]
    if flagged:
        return flagged[0]
    built = [_built_as(r, r["variant"]) for r in rows]
    if len(set(built)) < len(rows):  # two rows built under one name (repos of two builds): the shown names decide
        built = [r["variant"] for r in rows]
    shown = dict(zip(built, (r["variant"] for r in rows)))
    named = [{**r, "variant": b} for r, b in zip(rows, built)]
    teacher = next((r for r in named if r["variant"] == artifacts.TEACHER), None)
    best = recommend_row(named, teacher["accuracy"] if teacher else None, tolerance, criterion)
    return shown.get(best, best)


def _open(family: VariantFamily, name: str, folder: Path, repo: str | None, metrics: dict) -> None:
    """Serve one folder, or list why it cannot be served."""
    family.unavailable.pop(name, None)
    if not artifacts.servable(folder):
        family.references[name] = "PyTorch reference, not served"
        return
    try:
        runner = artifacts.open_onnx(folder, family.threads)
        time_forward(runner, [runner.encode(["warm up the session"])], runs=0, warmup=3)  # first runs allocate
        stamp = (folder / artifacts.METRICS).stat().st_mtime if (folder / artifacts.METRICS).is_file() else 0.0
        family.variants = {**family.variants, name: Variant(name, runner, runner.model_file.stat().st_size / 1e6, metrics,
                                                            repo, stamp)}
    except Exception as exc:  # ArtifactError names the folder; anything else is shown as it came
        family.variants = {k: v for k, v in family.variants.items() if k != name}
        family.unavailable[name] = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        log.warning("variant %s unavailable: %s", name, family.unavailable[name])


def _settle(family: VariantFamily) -> None:
    """Order (reference first), recommendation and front, from the rows loaded so far."""
    ref = family.reference
    if ref is not None:  # reference first so tables read top-down from it
        family.variants = {ref: family.variants[ref], **family.variants}
    family.rows.sort(key=lambda r: (_built_as(r, r["variant"]) != artifacts.TEACHER, r["variant"]))
    family.recommended = recommend(family.rows, *family.rule) if family.rows else None
    family.pareto = set(pareto_front(family.rows)) if family.rows else set()


def load_family(variants_dir: str | Path | None = None, repo_ids: list[str] | None = None, threads: int = 1) -> VariantFamily:
    """Load every variant under ``variants_dir`` (or download ``repo_ids`` from the Hub), once.

    One intra-op thread per session: a variant's latency is its single-thread time, as measured."""
    family = VariantFamily(threads=threads)
    if repo_ids:
        recipe = None
        for repo in repo_ids:
            name = repo.split("/")[-1]
            try:
                folder = _download(repo)
            except Exception as exc:  # network, auth, missing repo: list it, keep going
                family.unavailable[name] = f"download of {repo} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
                continue
            recipe = recipe or artifacts.read_config(folder).get("recipe")
            metrics = artifacts.read_metrics(folder) or {}
            if metrics:
                metrics["built_as"] = metrics.get("variant") or name
                metrics["variant"], metrics["hub_repo"] = name, repo
                family.rows.append(metrics)
            _open(family, name, folder, repo, metrics)
        family.data, family.rule = artifacts.data_description(recipe), accuracy_rule(recipe)
    elif variants_dir is not None:
        family.folder = Path(variants_dir)
        refresh(family)
        return family
    _settle(family)
    return family


def refresh(family: VariantFamily) -> bool:
    """Load the folders that appeared (or were rebuilt) under the family's build folder since the
    last look; True when anything changed. Safe while requests are being served: the variant
    mapping is replaced, never mutated in place."""
    if family.folder is None:
        return False
    with family.lock:
        report_rows = {r["variant"]: r for r in (artifacts.read_json(family.folder / artifacts.REPORT) or {}).get("rows", [])}
        changed = False
        rows = {r["variant"]: r for r in family.rows}
        for folder in artifacts.list_variants(family.folder):
            name = folder.name
            stamp = (folder / artifacts.METRICS).stat().st_mtime
            if family.stamps.get(name) == stamp:
                continue
            family.stamps[name] = stamp
            metrics = {**(artifacts.read_metrics(folder) or {}), **report_rows.get(name, {})}
            if not metrics.get("variant"):
                continue
            metrics.update(variant=name, hub_repo=None)
            rows[name] = metrics
            _open(family, name, folder, None, metrics)
            changed = True
        if report_rows:  # the build's report adds its flags (recommended, pareto) once it is written
            for name, r in rows.items():
                for key in ("recommended", "pareto", "significantly_worse"):
                    if key in report_rows.get(name, {}) and r.get(key) != report_rows[name][key]:
                        r[key], changed = report_rows[name][key], True
        if changed:
            family.version += 1
        if changed or not family.data:
            family.rows = list(rows.values())
            recipe = artifacts.read_recipe_dict(family.folder)
            family.data, family.rule = artifacts.data_description(recipe), accuracy_rule(recipe)
            _settle(family)
        return changed


def clean_text(text: str | None) -> tuple[str, list[str]]:
    """Normalise user input; returns (text, notes shown to the user)."""
    notes = []
    text = text or ""
    stripped = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    if stripped != text:
        notes.append("control characters were removed")
    if len(stripped) > MAX_CHARS:
        notes.append(f"input was {len(stripped):,} characters; only the first {MAX_CHARS:,} were classified")
        stripped = stripped[:MAX_CHARS]
    return stripped.strip(), notes


def _label(v: Variant, logits: np.ndarray) -> tuple[str, float]:
    names = id2label(v.runner.config)
    if is_multi_label(v.runner.config):  # independent sigmoids: every label above 0.5
        probs = 1 / (1 + np.exp(-logits[0]))
        on = [names.get(i, str(i)) for i in np.flatnonzero(probs > 0.5)]
        return (", ".join(on) or "(none)"), float(probs.max())
    probs = softmax(logits)[0]
    k = int(probs.argmax())
    return names.get(k, str(k)), float(probs[k])


def _encode(variants: list[Variant], text: str) -> dict:
    """``text`` encoded once per distinct tokenizer (``encode_key``), not once per variant."""
    encoded: dict = {}
    for v in variants:
        if v.runner.encode_key not in encoded:
            encoded[v.runner.encode_key] = v.runner.encode([text])
    return encoded


def predict(family: VariantFamily, text: str) -> tuple[list[dict], list[str]]:
    """Classify one text with every variant: (rows, notes). Empty text -> no rows, a note.

    The variants run one after another, each on its own single-thread session, so each is timed
    alone: ``latency_ms`` is this request's model time, ``live_ms`` the median of the variant's
    latest warm samples (:func:`sample_warm`), ``build_p50_ms`` the build's steady measurement."""
    text, notes = clean_text(text)
    if not text:
        return [], ["Please type a sentence to classify (the input was empty)."]
    variants = list(family.variants.values())
    if not variants:
        return [], ["No variant is ready to answer yet."]

    encoded = _encode(variants, text)
    rows = []
    with family.gate:
        for v in variants:
            logits, ms = timed_forward(v.runner, encoded[v.runner.encode_key])
            v.times.append(ms)
            label, conf = _label(v, logits)
            m = v.metrics
            live = v.live_ms()
            rows.append({
                "variant": v.name,
                "label": label,
                "confidence": round(conf, 4),
                "latency_ms": round(ms, 3),
                "live_ms": round(live, 3) if live is not None else None,
                "build_p50_ms": round(m["latency_p50_ms"], 3) if "latency_p50_ms" in m else None,
                "size_mb": round(v.size_mb, 2),
                "accuracy": round(m["accuracy"], 4) if "accuracy" in m else None,
                "ood_accuracy": round(m["ood_balanced_accuracy"], 4) if "ood_balanced_accuracy" in m else None,
            })
    family.recent.append(encoded)
    family.answered.set()
    ref = next((r["label"] for r in rows if r["variant"] == family.reference), None)
    for r in rows:
        r["agrees"] = "✓" if r["label"] == ref else "✗ differs"
    return rows, notes


def sample_warm(family: VariantFamily) -> list[str]:
    """Time each variant warm, alone on one thread: one untimed forward pass, then ``WARM_RUNS``
    timed ones back to back, each joining ``Variant.warm``. Returns the variants sampled.

    The passes run over the latest requests' sentences (the oldest of the last ``WARM_RUNS + 1``
    warms up, the newer ones are timed), so like the build's p50 the figure cycles through
    different sentences. A sweep keeps its sentences until every variant has been timed on them.
    Requests come first: before every pass it checks the gate and stops when a request runs; the
    next call restarts the interrupted variant, warm-up included, on the same sentences. (Moving on
    to newer sentences instead would time long sentences, whose sweeps are interrupted more often,
    less often, and live_ms would read low.)"""
    if not family.sweep_todo:
        if not family.recent:
            return []
        family.sweep_inputs, family.sweep_todo = list(family.recent), list(family.variants)
    inputs = family.sweep_inputs
    done: list[str] = []
    while family.sweep_todo:
        v = family.variants.get(family.sweep_todo[0])
        if v is not None and all(v.runner.encode_key in enc for enc in inputs):  # else: gone, or a newer tokenizer
            for i in range(WARM_RUNS + 1):
                if not family.gate.try_sample():
                    return done
                try:
                    ms = timed_forward(v.runner, inputs[i % len(inputs)][v.runner.encode_key])[1]
                    if i:  # still inside the gate: no request reads the window while it changes
                        v.warm.append(ms)
                finally:
                    family.gate.sampled()
            done.append(v.name)
        family.sweep_todo.pop(0)
    return done


def start_warm_timer(family: VariantFamily, texts: list[str] | None = None) -> threading.Thread:
    """The app's warm timer: a daemon thread that runs :func:`sample_warm` after every answer
    (``family.answered``), and once at start over ``texts`` so that the first visitor's answer ranks
    warm sessions, not each session's first run ever (up to 5.7x the p50 on a 25-variant page); real
    requests' passes push those out of the window. A variant with no warm sample yet shows its
    requests' own runs."""
    if texts:
        variants = list(family.variants.values())
        for text in texts[-(WARM_RUNS + 1):]:  # what ``recent`` holds; older texts would be dropped unused
            family.recent.append(_encode(variants, text))
        family.answered.set()

    def loop():
        while True:
            family.answered.wait()
            family.answered.clear()
            time.sleep(WARM_IDLE_S)  # let the answer leave before the timer takes a core
            try:
                sample_warm(family)
            except Exception:  # a variant reloaded mid-sample, say: log it, keep the timer alive
                log.exception("warm timer")

    thread = threading.Thread(target=loop, daemon=True, name="warm-timer")
    thread.start()
    return thread


def parse_batch(text: str | None, file_path: str | None) -> tuple[list[str], list[int] | None, list[str]]:
    """Lines of text, or a CSV/TSV upload with a sentence/text column and an optional label column."""
    notes: list[str] = []
    if file_path:
        data = read_file(file_path, ("sentence", "text"), "label", require_labels=False)
        texts, labels = data.texts, data.labels
    else:
        texts, labels = [line for line in (text or "").splitlines() if line.strip()], None
    if len(texts) > MAX_BATCH_ROWS:
        notes.append(f"{len(texts):,} rows given; only the first {MAX_BATCH_ROWS} were used (row cap)")
        texts = texts[:MAX_BATCH_ROWS]
        labels = labels[:MAX_BATCH_ROWS] if labels else labels
    texts = [clean_text(t)[0] or "." for t in texts]
    if not texts:
        raise ValueError("no text to classify: paste one sentence per line or upload a CSV/TSV")
    return texts, labels, notes


def run_batch(family: VariantFamily, texts: list[str], labels: list[int] | None, progress=None):
    """Per-variant accuracy/throughput, the pairwise agreement matrix, and the sentences whose
    label differs from the reference in some variant: (rows, matrix, names, flips).

    Predictions are the served ones (``served_logits``: as each sentence alone gets it);
    throughput is a separate padded batch-32 pass."""
    variants = list(family.variants.values())
    if progress is not None:
        progress(0, desc=f"running {len(variants)} variants")

    def run(v: Variant):
        _, per_s = timed_logits(v.runner, texts, 32)
        return v, predictions(v.runner.served_logits(texts), is_multi_label(v.runner.config)), per_s

    preds, rows = {}, []
    with family.gate:  # the warm timer stays off the cores while a batch runs
        results = family.map(run, variants)
    for v, pred, per_s in results:
        preds[v.name] = pred
        row = {"variant": v.name, "sentences": len(texts), "batch32_throughput_per_s": round(per_s, 1)}
        if labels is not None:
            row["accuracy"] = round(float(np.mean(same_prediction(pred, np.asarray(labels)))), 4)
        rows.append(row)
    names = [v.name for v in variants]
    matrix = [[a] + [round(float(np.mean(same_prediction(preds[a], preds[b]))), 4) for b in names] for a in names]
    flips = []
    ref = family.reference
    if ref is not None:
        names_of = id2label(family.variants[ref].runner.config)
        label = lambda p: names_of.get(int(p), str(p)) if np.ndim(p) == 0 else str(list(p))  # noqa: E731
        for i, t in enumerate(texts):
            differ = {n: label(preds[n][i]) for n in names if not np.all(preds[n][i] == preds[ref][i])}
            if differ:
                flips.append({"sentence": t, ref: label(preds[ref][i]), **differ})
    return rows, matrix, names, flips
