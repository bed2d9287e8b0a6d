"""Runners: texts -> float32 logits, for an ONNX file (serving and measurement alike)
or a PyTorch model (the teacher and reference rows), plus the one timing helper.

``OnnxRunner`` needs only onnxruntime, tokenizers and numpy: the app and the Space
import this module without torch or transformers. It is given its files; which files a
variant folder holds is :mod:`compression.artifacts`' business (``artifacts.open_onnx``).

Accuracy is measured the way the model is served (``served_logits``): one sentence at a
time, or in batches only where that is proven to give the same answer. ORT's dynamic int8
quantizes each activation with one scale over the whole batch, padding included, so a
sentence's prediction depends on its neighbours; those graphs are measured at batch 1.
"""
from __future__ import annotations

import copy
import hashlib
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

# ops whose activation scale is computed from the whole input tensor at run time: batch-dependent
BATCH_DEPENDENT_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLSTM"}
BUCKET = 32  # sentences per unpadded equal-length batch where batching is exact


def is_multi_label(config) -> bool:
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return get("problem_type") == "multi_label_classification"


def id2label(config) -> dict[int, str]:
    raw = config.get("id2label") if isinstance(config, dict) else getattr(config, "id2label", None)
    return {int(k): v for k, v in (raw or {}).items()}


class Runner:
    """texts -> float32 logits. Subclasses set config, max_length, model_file, kind and batch_invariant."""

    kind: str                 # "onnx" or "torch": what executes the model
    model_file: Path | None
    config: object
    batch_invariant: bool = True  # a sentence's logits do not depend on the other sentences of its batch

    def encode(self, texts: list[str]) -> dict:
        raise NotImplementedError

    def forward(self, enc: dict) -> np.ndarray:
        raise NotImplementedError

    def lengths(self, texts: list[str]) -> list[int]:
        raise NotImplementedError

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Padded batches in order: the throughput path (not how accuracy is measured)."""
        out = [self.forward(self.encode(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def served_logits(self, texts: list[str]) -> np.ndarray:
        """Each sentence's logits as a one-sentence request gets them.

        Batch-invariant models run unpadded batches of sentences with the same token count
        (no padding, so no neighbour changes a result beyond float rounding); the others run
        one sentence at a time."""
        if not texts:
            return np.zeros((0, 0), np.float32)
        groups: dict[int, list[int]] = defaultdict(list)
        size = BUCKET if self.batch_invariant else 1
        for i, n in enumerate(self.lengths(texts)):
            groups[n].append(i)
        out: list[np.ndarray | None] = [None] * len(texts)
        for idx in groups.values():
            for b in range(0, len(idx), size):
                part = idx[b : b + size]
                for i, row in zip(part, self.forward(self.encode([texts[j] for j in part]))):
                    out[i] = row
        return np.stack(out).astype(np.float32)

    def with_threads(self, threads: int) -> "Runner":
        raise NotImplementedError


class OnnxRunner(Runner):
    kind = "onnx"

    def __init__(self, model_file: Path, tokenizer_file: Path, config: dict, max_length: int, pad_token: str | None = None,
                 threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_file, self.tokenizer_file = Path(model_file), Path(tokenizer_file)
        self.config, self.max_length, self.pad_token, self.threads = config, int(max_length), pad_token, threads
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.model_file), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(self.tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.pad_id = self._pad_id()
        # runners with equal keys encode a text identically (same tokenizer file, length, pad, inputs)
        self.encode_key = (hashlib.sha1(self.tokenizer_file.read_bytes()).hexdigest(), self.max_length, self.pad_id,
                           tuple(self.input_names))

    @property
    def batch_invariant(self) -> bool:  # read from the graph when first asked (serving never asks)
        if not hasattr(self, "_ops"):
            self._ops = graph_ops(self.model_file)
        return not (self._ops & BATCH_DEPENDENT_OPS)

    def _pad_id(self) -> int:
        if self.pad_token is not None and self.tokenizer.token_to_id(self.pad_token) is not None:
            return self.tokenizer.token_to_id(self.pad_token)
        return int(self.config.get("pad_token_id") or 0)

    def lengths(self, texts):
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]

    def encode(self, texts):
        encs = self.tokenizer.encode_batch(list(texts))
        width = max((len(e.ids) for e in encs), default=1)
        ids = np.full((len(encs), width), self.pad_id, np.int64)
        mask = np.zeros((len(encs), width), np.int64)
        types = np.zeros((len(encs), width), np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
        enc = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: v for k, v in enc.items() if k in self.input_names}

    def forward(self, enc):
        return np.asarray(self.session.run(None, enc)[0], dtype=np.float32)

    def with_threads(self, threads: int) -> "OnnxRunner":
        return OnnxRunner(self.model_file, self.tokenizer_file, self.config, self.max_length, self.pad_token, threads)


def graph_ops(model_file: Path) -> set[str]:
    """Op types of an ONNX graph, read without loading its weights."""
    import onnx

    try:
        model = onnx.load(str(model_file), load_external_data=False)
    except Exception:  # the session already opened it; an unreadable graph just reports no ops
        return set()
    return {n.op_type for n in model.graph.node}


class TorchRunner(Runner):
    """A PyTorch model behind the same interface (teacher and reference rows; build side only)."""

    kind = "torch"

    def __init__(self, model, tokenizer, threads: int = 1, max_length: int = 128, model_file: Path | None = None):
        self.threads = threads
        self.model, self.tokenizer = model.eval(), tokenizer
        self.config = model.config
        self.max_length, self.model_file = max_length, model_file
        # torch's dynamic int8 Linear scales each activation over the whole batch, like ORT's
        self.batch_invariant = not any("quantized.dynamic" in type(m).__module__ for m in model.modules())

    def lengths(self, texts):
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]

    def encode(self, texts):
        from .modeling import accepted_inputs

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return accepted_inputs(self.model, enc)

    def forward(self, enc):
        import torch

        from .modeling import torch_threads

        with torch_threads(self.threads), torch.inference_mode():
            return self.model(**enc).logits.float().numpy()

    def with_threads(self, threads: int) -> "TorchRunner":
        clone = copy.copy(self)  # shares the model; only the thread count differs
        clone.threads = threads
        return clone


def timed_forward(runner: Runner, enc: dict) -> tuple[np.ndarray, float]:
    """(logits, milliseconds) of one forward pass, tokenization excluded: the one definition
    of batch-1 latency in this project."""
    t0 = time.perf_counter()
    logits = runner.forward(enc)
    return logits, (time.perf_counter() - t0) * 1e3


def time_forward(runner: Runner, encoded: list[dict], runs: int, warmup: int = 0) -> list[float]:
    """Milliseconds of ``runs`` forward passes cycling through ``encoded``, after ``warmup`` untimed passes."""
    for i in range(warmup):
        runner.forward(encoded[i % len(encoded)])
    return [timed_forward(runner, encoded[i % len(encoded)])[1] for i in range(runs)]


def timed_logits(runner: Runner, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, float]:
    """(logits, sentences per second) over ``texts`` in padded batches: the one throughput measurement."""
    t0 = time.perf_counter()
    logits = runner.logits(texts, batch_size)
    elapsed = time.perf_counter() - t0
    return logits, (len(texts) / elapsed if elapsed > 0 else float("inf"))
