"""What the app serves: every ONNX variant loaded once, and pure functions over them.

Kept free of Gradio so it is testable on its own and reusable behind any server.
A variant that fails to load is kept in ``unavailable`` with the reason; the
rest keep working.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import statistics
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .evaluation import OnnxRunner, is_multi_label, predictions, same_prediction, variant_format

log = logging.getLogger(__name__)
MAX_CHARS = 2000        # longer input is cut (the tokenizer keeps 128 tokens anyway)
MAX_BATCH_ROWS = 500    # batch tab cap: beyond this the demo would hog a shared CPU
TIMING_RUNS = 5
REFERENCE = "fp32"      # the fp32 teacher exported to ONNX: identical predictions to PyTorch


@dataclass
class Variant:
    name: str
    runner: OnnxRunner
    size_mb: float
    metrics: dict
    hub_repo: str | None = None


@dataclass
class Studio:
    variants: dict[str, Variant] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    report_rows: list[dict] = field(default_factory=list)
    pareto_png: Path | None = None

    @property
    def reference(self) -> str | None:
        if REFERENCE in self.variants:
            return REFERENCE
        return next(iter(self.variants), None)

    @property
    def names(self) -> list[str]:
        return list(self.variants)


def _load_one(folder: Path, threads: int) -> Variant:
    fmt = variant_format(folder)
    if fmt != "onnx":
        raise ValueError(f"{fmt} variant (PyTorch only; the app serves ONNX Runtime variants)")
    runner = OnnxRunner(folder, threads=threads)
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return Variant(folder.name, runner, runner.model_file.stat().st_size / 1e6, metrics, metrics.get("hub_repo"))


def load_studio(variants_dir: str | Path | None = None, repo_ids: list[str] | None = None, threads: int | None = None) -> Studio:
    """Load every variant under ``variants_dir`` (or download ``repo_ids`` from the Hub)."""
    threads = threads or 1  # one thread per session: steadier timings beside the web server, same as evaluation
    studio = Studio()
    folders: list[tuple[str, Path | None, str | None]] = []
    if repo_ids:
        from huggingface_hub import snapshot_download

        for repo in repo_ids:
            name = repo.split("/")[-1]
            try:
                folders.append((name, Path(snapshot_download(repo)), repo))
            except Exception as exc:  # network, auth, missing repo: list it, keep going
                studio.unavailable[name] = f"download of {repo} failed: {type(exc).__name__}: {str(exc)[:150]}"
    elif variants_dir is not None and Path(variants_dir).is_dir():
        root = Path(variants_dir)
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and folder.name != "teacher":
                folders.append((folder.name, folder, None))
        report = root / "report.json"
        if report.is_file():
            studio.report_rows = json.loads(report.read_text())["rows"]
        if (root / "pareto.png").is_file():
            studio.pareto_png = root / "pareto.png"
    for name, folder, repo in folders:
        try:
            v = _load_one(folder, threads)
            for _ in range(3):  # warm up: ORT's first runs allocate, and would show as latency
                v.runner.forward(v.runner.encode(["warm up the session"]))
            v.name, v.hub_repo = name, repo or v.hub_repo
            studio.variants[name] = v
        except Exception as exc:
            studio.unavailable[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log.warning("variant %s unavailable: %s", name, studio.unavailable[name])
    if REFERENCE in studio.variants:  # reference first so tables read top-down from it
        studio.variants = {REFERENCE: studio.variants[REFERENCE], **studio.variants}
    return studio


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


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def predict(studio: Studio, text: str) -> tuple[list[dict], list[str]]:
    """Classify one text with every variant: (rows, notes). Empty text -> no rows, a note."""
    text, notes = clean_text(text)
    if not text:
        return [], ["Please type a sentence to classify (the input was empty)."]
    rows = []
    for v in studio.variants.values():
        enc = v.runner.encode([text])
        logits = v.runner.forward(enc)  # untimed: the previous variant evicted this one's weights from cache
        times = []
        for _ in range(TIMING_RUNS):
            t0 = time.perf_counter()
            logits = v.runner.forward(enc)
            times.append((time.perf_counter() - t0) * 1e3)
        names = v.runner.config.id2label
        if is_multi_label(v.runner.config):  # independent sigmoids: every label above 0.5
            probs = 1 / (1 + np.exp(-logits[0]))
            on = [names.get(i, str(i)) for i in np.flatnonzero(probs > 0.5)]
            label, conf = (", ".join(on) or "(none)"), float(probs.max())
        else:
            probs = _softmax(logits)[0]
            k = int(probs.argmax())
            label, conf = names.get(k, str(k)), float(probs[k])
        rows.append({
            "variant": v.name,
            "label": label,
            "confidence": round(conf, 4),
            "latency_ms": round(statistics.median(times), 3),
            "size_mb": round(v.size_mb, 2),
        })
    ref = next((r["label"] for r in rows if r["variant"] == studio.reference), None)
    for r in rows:
        r["agrees"] = "✓" if r["label"] == ref else "✗ differs"
    return rows, notes


def parse_batch(text: str | None, file_path: str | None) -> tuple[list[str], list[int] | None, list[str]]:
    """Lines of text or a CSV/TSV upload (text column + optional label) -> (texts, labels, notes)."""
    notes: list[str] = []
    if file_path:
        raw = Path(file_path).read_text(encoding="utf-8", errors="replace")
        dialect = "excel-tab" if file_path.endswith(".tsv") or "\t" in raw.split("\n", 1)[0] else "excel"
        try:
            rows = list(csv.reader(io.StringIO(raw), dialect=dialect, strict=True))
        except csv.Error as exc:
            raise ValueError(f"could not parse the uploaded file: {exc}") from None
        if not rows:
            raise ValueError("the uploaded file is empty")
        header = [h.strip().lower() for h in rows[0]]
        tcol = next((header.index(c) for c in ("sentence", "text") if c in header), None)
        if tcol is None:
            raise ValueError(f"the uploaded file needs a 'sentence' or 'text' column; found {rows[0]}")
        lcol = header.index("label") if "label" in header else None
        texts, labels = [], []
        for n, row in enumerate(rows[1:], 2):
            if len(row) != len(header):
                raise ValueError(f"line {n} has {len(row)} fields, the header has {len(header)}")
            if row[tcol].strip():
                texts.append(row[tcol])
                if lcol is not None:
                    try:
                        labels.append(int(row[lcol]))
                    except ValueError:
                        raise ValueError(f"line {n}: label {row[lcol]!r} is not an integer") from None
        result_labels = labels if lcol is not None else None
    else:
        texts = [line for line in (text or "").splitlines() if line.strip()]
        result_labels = None
    if len(texts) > MAX_BATCH_ROWS:
        notes.append(f"{len(texts):,} rows given; only the first {MAX_BATCH_ROWS} were used (row cap)")
        texts = texts[:MAX_BATCH_ROWS]
        result_labels = result_labels[:MAX_BATCH_ROWS] if result_labels else result_labels
    texts = [clean_text(t)[0] or "." for t in texts]
    if not texts:
        raise ValueError("no text to classify: paste one sentence per line or upload a CSV/TSV")
    return texts, result_labels, notes


def run_batch(studio: Studio, texts: list[str], labels: list[int] | None, progress=None) -> tuple[list[dict], list[list], list[str]]:
    """Per-variant accuracy/throughput and the pairwise agreement matrix."""
    preds, rows = {}, []
    names = studio.names
    for i, v in enumerate(studio.variants.values()):
        if progress is not None:
            progress((i, len(names)), desc=f"running {v.name}")
        t0 = time.perf_counter()
        logits = v.runner.logits(texts, 32)
        dt = time.perf_counter() - t0
        preds[v.name] = predictions(logits, is_multi_label(v.runner.config))
        row = {"variant": v.name, "sentences": len(texts), "throughput_per_s": round(len(texts) / dt, 1)}
        if labels is not None:
            row["accuracy"] = round(float(np.mean(same_prediction(preds[v.name], np.asarray(labels)))), 4)
        rows.append(row)
    matrix = [[a] + [round(float(np.mean(same_prediction(preds[a], preds[b]))), 4) for b in names] for a in names]
    return rows, matrix, names
