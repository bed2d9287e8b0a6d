"""Runners: texts -> float32 logits, for an ONNX file (serving and measurement alike)
or a PyTorch model (the teacher and reference rows), plus the one timing helper.

``OnnxRunner`` needs only onnxruntime, tokenizers and numpy: the app and the Space
import this module without torch or transformers. It reads ``tokenizer.json`` and
``config.json`` itself, so what the app serves is tokenized exactly as it was measured.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np

FORMAT_ONNX, FORMAT_TORCH, FORMAT_TORCH_INT8 = "onnx", "pytorch", "pytorch-int8"


def _get(config, key, default=None):
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


def usable_length(config, requested: int | None, folder: Path | None = None) -> int:
    """The recipe's max_length (or 128), capped by what the position table holds."""
    if requested is None and folder is not None and (Path(folder) / "compression_config.json").is_file():
        cc = json.loads((Path(folder) / "compression_config.json").read_text())
        requested = cc.get("recipe", {}).get("dataset", {}).get("max_length")
    requested = requested or 128
    cap = _get(config, "max_position_embeddings") or _get(config, "n_positions")
    if cap and _get(config, "model_type") in ("roberta", "xlm-roberta", "camembert"):
        cap -= 2  # their position ids start after the padding index
    return min(requested, cap) if cap else requested


def is_multi_label(config) -> bool:
    return _get(config, "problem_type") == "multi_label_classification"


def id2label(config) -> dict[int, str]:
    return {int(k): v for k, v in (_get(config, "id2label") or {}).items()}


class Runner:
    """texts -> float32 logits. Subclasses set config, max_length, model_file, fmt."""

    fmt: str
    model_file: Path | None
    config: object

    def encode(self, texts: list[str]) -> dict:
        raise NotImplementedError

    def forward(self, enc: dict) -> np.ndarray:
        raise NotImplementedError

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = [self.forward(self.encode(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def with_threads(self, threads: int) -> "Runner":
        raise NotImplementedError


class OnnxRunner(Runner):
    fmt = FORMAT_ONNX

    def __init__(self, folder: Path, threads: int = 1, max_length: int | None = None, model_file: str = "model.onnx"):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.model_file = self.folder / model_file
        if not self.model_file.is_file():
            raise FileNotFoundError(f"{self.folder}: no {model_file}")
        if not (self.folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{self.folder}: no tokenizer.json (save a fast tokenizer beside the model)")
        self.threads = threads
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.model_file), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = json.loads((self.folder / "config.json").read_text())
        self.max_length = usable_length(self.config, max_length, self.folder)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.pad_id = self._pad_id()
        # runners with equal keys encode a text identically (same tokenizer file, length, pad, inputs)
        self.encode_key = (hashlib.sha1((self.folder / "tokenizer.json").read_bytes()).hexdigest(), self.max_length,
                           self.pad_id, tuple(self.input_names))

    def _pad_id(self) -> int:
        tc = self.folder / "tokenizer_config.json"
        pad = json.loads(tc.read_text()).get("pad_token") if tc.is_file() else None
        if isinstance(pad, dict):
            pad = pad.get("content")
        if pad is not None and self.tokenizer.token_to_id(pad) is not None:
            return self.tokenizer.token_to_id(pad)
        return int(_get(self.config, "pad_token_id") or 0)

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
        return OnnxRunner(self.folder, threads, self.max_length, self.model_file.name)


class TorchRunner(Runner):
    """A PyTorch model behind the same interface (teacher and reference rows; build side only)."""

    fmt = FORMAT_TORCH

    def __init__(self, model, tokenizer, threads: int = 1, max_length: int | None = None, model_file: Path | None = None,
                 fmt=FORMAT_TORCH):
        self.threads = threads
        self.model, self.tokenizer = model.eval(), tokenizer
        self.config = model.config
        self.max_length = usable_length(self.config, max_length, model_file.parent if model_file else None)
        self.model_file, self.fmt = model_file, fmt

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
    """(logits, sentences per second) over ``texts`` in batches: the one throughput measurement."""
    t0 = time.perf_counter()
    logits = runner.logits(texts, batch_size)
    elapsed = time.perf_counter() - t0
    return logits, (len(texts) / elapsed if elapsed > 0 else float("inf"))
