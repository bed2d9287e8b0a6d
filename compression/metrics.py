"""Honest measurement of one runner: quality, latency, throughput, size, parameters.

Every row (the PyTorch teacher included) is measured by the same code with the same
thread count, warm-up and sentences, so ratios between rows mean something. Pure
numpy at import: the app uses the quality and softmax helpers without torch.
"""
from __future__ import annotations

import gzip
import os
import platform
from pathlib import Path

import numpy as np

from .config import EvalConfig
from .runtime import FORMAT_ONNX, Runner, is_multi_label, time_forward, timed_logits

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "asimddp", "i8mm")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


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
    """accuracy, F1, loss (+ balanced accuracy, agreement).

    Single-label: accuracy, F1 of the positive class (2 labels) or macro F1, cross-entropy,
    balanced accuracy. Multi-label (sigmoid outputs, multi-hot labels): exact-match accuracy,
    micro F1, binary cross-entropy. Agreement: share of examples predicted as ``reference``.
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
        logp = np.log(np.clip(softmax(logits), 1e-30, None))
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
    times = time_forward(runner, encoded, cfg.latency_runs, cfg.warmup)
    return {
        "latency_p50_ms": float(np.percentile(times, 50)),
        "latency_p95_ms": float(np.percentile(times, 95)),
        "latency_mean_ms": float(np.mean(times)),
    }


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


def _cpuinfo() -> dict[str, str]:
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_name() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The flags that decide which int8 kernels ONNX Runtime can use here."""
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    return [f for f in INT8_FLAGS if f in flags]


def measure(runner: Runner, texts: list[str], labels: list[int], cfg: EvalConfig, reference=None,
            ood=None, ood_reference=None) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """All metrics of one runner; returns (metrics, logits, out-of-domain logits or None).

    ``ood`` (TextData) adds ood_accuracy / ood_balanced_accuracy / ood_agreement, measured
    on ``cfg.accuracy_threads`` threads (all cores by default): it is accuracy only."""
    logits, metrics_throughput = timed_logits(runner, texts, cfg.throughput_batch)
    multi = is_multi_label(runner.config)
    metrics = quality(logits, labels, reference, multi)
    metrics["throughput_per_s"] = metrics_throughput
    ood_logits = None
    if ood is not None:
        ood_logits = runner.with_threads(cfg.accuracy_threads or os.cpu_count() or 1).logits(ood.texts, cfg.throughput_batch)
        q = quality(ood_logits, ood.labels, ood_reference, multi)
        metrics.update({f"ood_{k}": v for k, v in q.items() if k in ("accuracy", "balanced_accuracy", "agreement")})
        metrics["ood_samples"] = len(ood.texts)
    metrics.update(latency(runner, texts, cfg))
    metrics["size_mb"], metrics["gzip_mb"] = file_sizes(runner.model_file)
    metrics["params"], metrics["sparsity"] = weight_stats(runner)
    metrics.update(eval_samples=len(texts), threads=cfg.threads, cpu=cpu_name(), cpu_flags=cpu_flags(),
                   cpu_count=os.cpu_count(), format=runner.fmt)
    return metrics, logits, ood_logits
