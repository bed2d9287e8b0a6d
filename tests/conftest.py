"""Tiny random models and synthetic data so most tests run in seconds.

The tiny BERT has a ~120-word WordPiece vocabulary, hidden size 128 and 2 layers
(big enough that weights, not graph metadata, dominate file sizes): every
property the pipeline promises (export parity, quantized nodes, size ratios,
resume) is visible on it. One integration test uses the real MiniLM.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytest

import tempfile

from compression.hubserver import free_port  # stdlib only: nothing imports huggingface_hub before HF_ENDPOINT is set

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def benchmark_module(name: str):
    """A script of ``benchmarks/`` imported as a module (the folder on sys.path, as the scripts import each other)."""
    import importlib.util
    import sys

    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finished_stamps(folder) -> dict:
    """When each finished row of a build folder was built: its compression_config.json's mtime (written
    once when the folder is finished; metrics.json is rewritten by every build's final timing pass)."""
    from compression import artifacts

    return {f.name: (f / "compression_config.json").stat().st_mtime_ns for f in artifacts.list_variants(folder)}



# The test Hub must be known before huggingface_hub is imported anywhere: its
# constants (endpoint, cache, xet) are read at import time. Nothing here reaches
# the real Hub: every Hub call goes to compression/hubserver.py on this port.
HUB_PORT = free_port()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="hf-cache-")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_TOKEN", None)

REPO = Path(__file__).resolve().parents[1]
SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
POS = ["good", "great", "fun", "lovely", "superb", "moving", "charming", "brilliant", "fine", "smart"]
NEG = ["bad", "awful", "dull", "boring", "weak", "ugly", "tedious", "poor", "messy", "flat"]
FILLER = ["the", "film", "movie", "is", "was", "a", "very", "plot", "story", "acting", "and", "it", "quite", "really"]


def synthetic(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, 4) + [rng.choice(POS if label else NEG)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


def make_tiny_model(folder: Path, model_type: str = "bert", seed: int = 0) -> Path:
    """Random tiny sequence classifier + WordPiece tokenizer saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(POS + NEG + FILLER))
    vocab += [c for c in "bcdefghijklmnopqrstuvwxyz0123456789.,!?'"] + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    assert len(vocab) == len(set(vocab))  # a duplicate would leave a hole in the vocab
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
        max_position_embeddings=64, num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _quiet_logs():
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("compression").setLevel(logging.INFO)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-data")
    write_tsv(folder / "train.tsv", synthetic(400, 1))
    write_tsv(folder / "validation.tsv", synthetic(120, 2))
    write_tsv(folder / "ood.tsv", synthetic(90, 3))  # the out-of-domain column: evaluated, never trained on
    return folder


def tiny_recipe_dict(model: Path, data: Path, **variants) -> dict:
    return {
        "version": 1,
        "name": "tiny",
        "base_model": str(model),
        "dataset": {"path": str(data), "label_names": ["negative", "positive"], "max_length": 32,
                    "name": "synthetic reviews", "task": "Sentiment classification"},
        "teacher": {"epochs": 4, "batch_size": 16, "learning_rate": 1e-3},
        "evaluation": {"threads": 1, "latency_runs": 10, "warmup": 2, "latency_sentences": 5,
                       "ood_path": str(data / "ood.tsv") if (data / "ood.tsv").is_file() else None},
        "variants": variants
        or {
            "fp32": ["export"],
            "fp16": ["export", "fp16"],
            "int8-dynamic": ["export", {"quantize_dynamic": {"preset": "auto"}}],
            "int8-emb4": ["export", "quantize_dynamic", "quantize_embeddings_4bit"],
            "int8-static": ["export", {"quantize_static": {"calibration_samples": 32}}],
            "w4": ["export", {"quantize_weights_4bit": {"block_size": 32}}],
            "torch-int8": ["torch_dynamic_int8"],
        },
    }


@pytest.fixture(scope="session")
def built(tmp_path_factory, tiny_model, tiny_data):
    """One build of the tiny recipe shared by read-only tests: (recipe, out_dir, summary)."""
    from compression.build import build
    from compression.recipe import Recipe

    recipe = Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data))
    out = tmp_path_factory.mktemp("built")
    summary = build(recipe, out)
    return recipe, out, summary


@pytest.fixture(scope="session")
def built_qat(tmp_path_factory, tiny_model, tiny_data):
    from compression.build import build
    from compression.recipe import Recipe

    d = tiny_recipe_dict(tiny_model, tiny_data, fp32=["export"],
                         qat=[{"qat": {"max_steps": 20, "batch_size": 16, "learning_rate": 1e-3}}])
    out = tmp_path_factory.mktemp("built-qat")
    build(Recipe.from_dict(d), out)
    return out
