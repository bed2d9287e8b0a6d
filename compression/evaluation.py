"""Honest measurement of one model: quality, latency, throughput, size, params.

Every row (the PyTorch teacher included) is measured by the same code with the
same thread count, warm-up and sentences, so ratios between rows mean something.
Runners wrap an ORT session or a PyTorch model behind one tiny interface.
"""
from __future__ import annotations

import copy
import gzip
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from .config import EvalConfig

log = logging.getLogger(__name__)
FORMAT_ONNX, FORMAT_TORCH, FORMAT_TORCH_INT8 = "onnx", "pytorch", "pytorch-int8"
MODEL_FILES = {FORMAT_ONNX: "model.onnx", FORMAT_TORCH: "model.safetensors", FORMAT_TORCH_INT8: "pytorch_int8.pt"}


def usable_length(config, requested: int | None, folder: Path | None = None) -> int:
    """The recipe's max_length (or 128), capped by what the position table holds."""
    if requested is None and folder is not None and (Path(folder) / "compression_config.json").is_file():
        cc = json.loads((Path(folder) / "compression_config.json").read_text())
        requested = cc.get("recipe", {}).get("dataset", {}).get("max_length")
    requested = requested or 128
    cap = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if cap and config.model_type in ("roberta", "xlm-roberta", "camembert"):
        cap -= 2  # their position ids start after the padding index
    return min(requested, cap) if cap else requested


def accepted_inputs(model, enc):
    """Keep the tokenizer outputs the model's forward takes (a tokenizer may emit
    token_type_ids that DistilBERT/GPT-2-style models reject)."""
    import inspect

    names = inspect.signature(model.forward).parameters
    return {k: v for k, v in enc.items() if k in names}


class Runner:
    """texts -> float32 logits. Subclasses set tokenizer, max_length, model_file."""

    fmt: str

    def encode(self, texts: list[str]) -> dict:
        raise NotImplementedError

    def forward(self, enc: dict) -> np.ndarray:
        raise NotImplementedError

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = [self.forward(self.encode(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class OnnxRunner(Runner):
    fmt = FORMAT_ONNX

    def __init__(self, folder: Path, threads: int = 1, max_length: int | None = None, tokenizer=None):
        import onnxruntime as ort
        from transformers import AutoConfig, AutoTokenizer

        self.folder = Path(folder)
        self.model_file = self.folder / "model.onnx"
        if not self.model_file.is_file():
            raise FileNotFoundError(f"{self.folder}: no model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.model_file), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = AutoConfig.from_pretrained(self.folder)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.folder)
        self.max_length = usable_length(self.config, max_length, self.folder)

    def encode(self, texts):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items() if k in self.input_names}

    def forward(self, enc):
        return np.asarray(self.session.run(None, enc)[0], dtype=np.float32)


class TorchRunner(Runner):
    fmt = FORMAT_TORCH

    def __init__(self, model, tokenizer, threads: int = 1, max_length: int | None = None, model_file: Path | None = None, fmt=FORMAT_TORCH):
        # Threads are set per forward and restored after: a process-wide
        # torch.set_num_threads(1) here once left every later KD/QAT run on one core.
        self.threads = threads
        self.model, self.tokenizer = model.eval(), tokenizer
        self.config = model.config
        self.max_length = usable_length(self.config, max_length, model_file.parent if model_file else None)
        self.model_file, self.fmt = model_file, fmt

    def encode(self, texts):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return accepted_inputs(self.model, enc)

    def forward(self, enc):
        import torch

        with torch_threads(self.threads), torch.inference_mode():
            return self.model(**enc).logits.float().numpy()


class torch_threads:
    """``with torch_threads(n):`` run with n intra-op threads, then restore the previous count."""

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


def variant_format(folder: Path) -> str:
    cc = Path(folder) / "compression_config.json"
    if cc.is_file():
        return json.loads(cc.read_text()).get("format", FORMAT_ONNX)
    return FORMAT_ONNX if (Path(folder) / "model.onnx").is_file() else FORMAT_TORCH


def load_runner(folder: Path, threads: int = 1, max_length: int | None = None) -> Runner:
    """Open any variant folder (ONNX, PyTorch, PyTorch int8) as a Runner."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    fmt = variant_format(folder)
    if fmt == FORMAT_ONNX:
        return OnnxRunner(folder, threads, max_length)
    tok = AutoTokenizer.from_pretrained(folder)
    if fmt == FORMAT_TORCH_INT8:
        import torch

        from .quantization import torch_dynamic_int8

        model = torch_dynamic_int8(AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(folder)))
        model.load_state_dict(torch.load(folder / MODEL_FILES[fmt], weights_only=False))
        return TorchRunner(model, tok, threads, max_length, folder / MODEL_FILES[fmt], fmt)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    return TorchRunner(model, tok, threads, max_length, folder / MODEL_FILES[FORMAT_TORCH], fmt)


# ---------------------------------------------------------------- model statistics
def file_sizes(path: Path) -> tuple[float, float]:
    """(MB on disk, MB after gzip -6): gzip shows what sparsity buys on the wire."""
    data = Path(path).read_bytes()
    return len(data) / 1e6, len(gzip.compress(data, compresslevel=6)) / 1e6


def weight_stats(runner: Runner) -> tuple[int, float]:
    """(parameter count, fraction of exact zeros among matrix weights)."""
    if runner.fmt == FORMAT_ONNX:
        import onnx
        from onnx import numpy_helper

        arrays = [numpy_helper.to_array(t) for t in onnx.load(str(runner.model_file)).graph.initializer]
    else:
        arrays = []
        for v in runner.model.state_dict().values():
            for t in (v if isinstance(v, tuple) else (v,)):
                if hasattr(t, "is_quantized") and t.is_quantized:
                    t = t.int_repr()
                if hasattr(t, "numpy"):
                    arrays.append(t.detach().cpu().numpy())
    params = int(sum(a.size for a in arrays))
    mats = [a for a in arrays if a.ndim >= 2]
    total = sum(a.size for a in mats)
    zeros = sum(int(np.count_nonzero(a == 0)) for a in mats)
    return params, (zeros / total if total else 0.0)


def is_multi_label(config) -> bool:
    return getattr(config, "problem_type", None) == "multi_label_classification"


def predictions(logits: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Class ids (argmax), or a 0/1 matrix for multi-label models (sigmoid > 0.5)."""
    return (logits > 0).astype(np.int64) if multi_label else logits.argmax(-1)


def same_prediction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-example equality of two prediction arrays (whole label sets for multi-label)."""
    eq = a == b
    return eq.all(-1) if eq.ndim > 1 else eq


def balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean of the per-class recalls over the classes present in ``y`` (robust to class imbalance)."""
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def quality(logits: np.ndarray, labels, reference: np.ndarray | None = None, multi_label: bool = False) -> dict:
    """accuracy, F1, loss, agreement.

    Single-label: accuracy, F1 of the positive class (2 labels) or macro F1, cross-entropy.
    Multi-label (sigmoid outputs, multi-hot labels): exact-match accuracy, micro F1,
    binary cross-entropy. Agreement: share of examples with the same prediction as ``reference``.
    """
    y = np.asarray(labels)
    pred = predictions(logits, multi_label)
    if multi_label:
        tp = np.sum((pred == 1) & (y == 1))
        denom = np.sum(pred == 1) + np.sum(y == 1)
        bce = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
        out = {"accuracy": float(np.mean(same_prediction(pred, y))), "f1": float(2 * tp / denom) if denom else 0.0,
               "loss": float(bce.mean())}
    else:
        shifted = logits - logits.max(-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        classes = [1] if logits.shape[1] == 2 else range(logits.shape[1])
        f1s = []
        for c in classes:
            tp = np.sum((pred == c) & (y == c))
            denom = np.sum(pred == c) + np.sum(y == c)
            f1s.append(2 * tp / denom if denom else 0.0)
        out = {"accuracy": float(np.mean(pred == y)), "f1": float(np.mean(f1s)), "loss": float(-logp[np.arange(len(y)), y].mean()),
               "balanced_accuracy": balanced_accuracy(pred, y)}
    if reference is not None:
        out["agreement"] = float(np.mean(same_prediction(pred, reference)))
    return out


def latency(runner: Runner, texts: list[str], cfg: EvalConfig) -> dict:
    """Batch-1 latency in ms (tokenization excluded, so rows compare the model alone)."""
    encoded = [runner.encode([t]) for t in texts[: cfg.latency_sentences]]
    for i in range(cfg.warmup):
        runner.forward(encoded[i % len(encoded)])
    times = []
    for i in range(cfg.latency_runs):
        enc = encoded[i % len(encoded)]
        t0 = time.perf_counter()
        runner.forward(enc)
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "latency_p50_ms": float(np.percentile(times, 50)),
        "latency_p95_ms": float(np.percentile(times, 95)),
        "latency_mean_ms": float(np.mean(times)),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def with_threads(runner: Runner, threads: int) -> Runner:
    """The same model on ``threads`` intra-op threads (a new ORT session; torch threads per forward)."""
    if isinstance(runner, OnnxRunner):
        return OnnxRunner(runner.folder, threads, runner.max_length, runner.tokenizer)
    clone = copy.copy(runner)
    clone.threads = threads
    return clone


def measure(runner: Runner, texts: list[str], labels: list[int], cfg: EvalConfig, reference=None,
            ood=None, ood_reference=None) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """All metrics of one runner; returns (metrics, logits, out-of-domain logits or None).

    ``ood`` (TextData) adds ood_accuracy / ood_balanced_accuracy / ood_agreement,
    measured on ``cfg.accuracy_threads`` threads (all cores by default)."""
    t0 = time.perf_counter()
    logits = runner.logits(texts, cfg.throughput_batch)
    elapsed = time.perf_counter() - t0
    multi = is_multi_label(runner.config)
    metrics = quality(logits, labels, reference, multi)
    ood_logits = None
    if ood is not None:
        fast = with_threads(runner, cfg.accuracy_threads or os.cpu_count() or 1)
        ood_logits = fast.logits(ood.texts, cfg.throughput_batch)
        q = quality(ood_logits, ood.labels, ood_reference, multi)
        metrics.update({f"ood_{k}": v for k, v in q.items() if k in ("accuracy", "balanced_accuracy", "agreement")})
        metrics["ood_samples"] = len(ood.texts)
        del fast
    metrics["throughput_per_s"] = len(texts) / elapsed if elapsed > 0 else float("inf")
    metrics.update(latency(runner, texts, cfg))
    metrics["size_mb"], metrics["gzip_mb"] = file_sizes(runner.model_file)
    metrics["params"], metrics["sparsity"] = weight_stats(runner)
    metrics.update(
        eval_samples=len(texts),
        threads=cfg.threads,
        cpu=cpu_name(),
        cpu_count=os.cpu_count(),
        format=runner.fmt,
    )
    return metrics, logits, ood_logits
