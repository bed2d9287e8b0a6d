"""Slow: the real MiniLM fine-tuned on 500 SST-2 sentences, exported, quantized, and
evaluated on the full 872-sentence validation split (1 point = 9 sentences)."""
import json

import numpy as np
import pytest

from compression.build import build
from compression.recipe import Recipe
from compression.artifacts import open_onnx
from conftest import SST2

pytestmark = pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason="../shared/data/sst2 not present")


@pytest.fixture(scope="module")
def minilm_build(tmp_path_factory):
    recipe = Recipe.from_dict({
        "version": 1,
        "name": "integration",
        "base_model": None,  # the offline MiniLM
        "dataset": {"path": str(SST2), "label_names": ["negative", "positive"], "train_samples": 500,
                    "eval_samples": None, "max_length": 64},
        "teacher": {"epochs": 4, "batch_size": 16, "learning_rate": 1e-4},
        "evaluation": {"threads": 2, "latency_runs": 20, "warmup": 3, "latency_sentences": 10},
        "variants": {"fp32": ["export"], "int8-dynamic": ["export", {"quantize_dynamic": {}}]},
    })
    out = tmp_path_factory.mktemp("minilm")
    return out, build(recipe, out)


def test_minilm_int8_keeps_accuracy_and_shrinks(minilm_build):
    out, summary = minilm_build
    rows = {r["variant"]: r for r in summary["rows"]}
    assert rows["teacher"]["accuracy"] > 0.70, "500 sentences should already beat chance clearly"
    assert abs(rows["int8-dynamic"]["accuracy"] - rows["fp32"]["accuracy"]) <= 0.01
    assert rows["fp32"]["size_mb"] / rows["int8-dynamic"]["size_mb"] >= 3.0
    assert rows["fp32"]["params"] == rows["teacher"]["params"] == 22_713_986


def test_minilm_fp32_onnx_matches_pytorch(minilm_build):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    import torch

    out, _ = minilm_build
    texts = ["a gripping , funny film .", "it never comes together ."]
    tok = AutoTokenizer.from_pretrained(out / "teacher")
    model = AutoModelForSequenceClassification.from_pretrained(out / "teacher").eval()
    with torch.inference_mode():
        ref = model(**tok(texts, padding=True, return_tensors="pt")).logits.numpy()
    got = open_onnx(out / "fp32").logits(texts)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert json.loads((out / "fp32" / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
