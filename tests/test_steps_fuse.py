"""Fuse, then quantize: the fused graph holds ORT's fused ops, computes the same logits, and int8 keeps them."""
import shutil

import numpy as np
import onnx
import pytest

from compression.artifacts import open_onnx
from compression.steps.fuse import FuseConfig, fuse
from compression.steps.quantize import QuantizeDynamicConfig, quantize_dynamic
from conftest import synthetic

TEXTS = [t for t, _ in synthetic(30, 23)] + ["good", "a " * 20 + "dull"]


def _ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def fused(built, tmp_path_factory):
    _, out, _ = built
    folder = tmp_path_factory.mktemp("fused") / "fp32"
    shutil.copytree(out / "fp32", folder)
    counts = fuse(folder / "model.onnx", FuseConfig())
    return out, folder, counts


def test_the_fused_graph_has_one_attention_per_layer_and_the_same_logits(fused):
    out, folder, counts = fused
    assert counts["Attention"] == 2 and counts["SkipLayerNormalization"] == 4 and counts["EmbedLayerNormalization"] == 1
    ops = _ops(folder / "model.onnx")
    assert "Softmax" not in ops and ops.count("Attention") == 2   # the unfused attention subgraph is gone
    ref = open_onnx(out / "fp32").served_logits(TEXTS)
    got = open_onnx(folder).served_logits(TEXTS)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_dynamic_int8_of_a_fused_graph_quantizes_attention_itself(fused, tmp_path):
    out, folder, _ = fused
    q = tmp_path / "q"
    shutil.copytree(folder, q)
    quantize_dynamic(q / "model.onnx", QuantizeDynamicConfig())
    ops = _ops(q / "model.onnx")
    assert ops.count("QAttention") == 2 and "Attention" not in ops
    runner = open_onnx(q)
    assert not runner.batch_invariant  # QAttention quantizes its input per call: measured one sentence at a time
    ref = open_onnx(out / "int8-dynamic").served_logits(TEXTS)
    got = runner.served_logits(TEXTS)
    assert np.abs(got - ref).max() < 0.05 and np.mean(got.argmax(-1) == ref.argmax(-1)) >= 0.95


def test_fusing_pruned_layers_with_uneven_head_counts(tiny_model, tmp_path, caplog):
    import logging

    import torch
    from transformers import AutoModelForSequenceClassification

    from compression.steps.export import export_onnx

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    model.prune_heads({0: [0, 1, 2], 1: [1]})                           # 1 head left in layer 0, 3 in layer 1
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    shutil.copy(path, tmp_path / "plain.onnx")
    from onnxruntime.transformers import optimizer

    with caplog.at_level(logging.WARNING):  # ORT alone warns about the narrower attention, as if the user erred
        optimizer.optimize_model(str(tmp_path / "plain.onnx"), model_type="bert", num_heads=0, hidden_size=0)
    assert any("Input hidden size" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert fuse(path, FuseConfig())["Attention"] == 2
    assert not any("Input hidden size" in r.getMessage() for r in caplog.records)  # expected here: not shown
    assert any("fused graph" in r.getMessage() for r in caplog.records)
    heads = [a.i for n in onnx.load(str(path)).graph.node if n.op_type == "Attention" for a in n.attribute if a.name == "num_heads"]
    assert sorted(heads) == [1, 3]
    import onnxruntime as ort

    ids = np.array([[2, 7, 9, 11, 3]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0]  # noqa: E731
    np.testing.assert_allclose(run(path), run(tmp_path / "plain.onnx"), atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(run(path), model(**{k: torch.tensor(v) for k, v in feed.items()}).logits.numpy(), atol=1e-4)


def test_fused_graph_still_takes_4bit_embeddings_when_the_embeddings_stay_unfused(built, tmp_path):
    from compression.steps.lowbit import quantize_4bit

    _, out, _ = built
    folder = tmp_path / "v"
    shutil.copytree(out / "fp32", folder)
    counts = fuse(folder / "model.onnx", FuseConfig(embed_layer_norm=False))
    assert "EmbedLayerNormalization" not in counts and counts["Attention"] == 2
    quantize_dynamic(folder / "model.onnx", QuantizeDynamicConfig())
    assert quantize_4bit(folder / "model.onnx", 64, True, matmuls=False, embeddings=True)["GatherBlockQuantized"] == 1
    ops = _ops(folder / "model.onnx")
    assert ops.count("QAttention") == 2
    ref = open_onnx(out / "int8-emb4").served_logits(TEXTS)
    got = open_onnx(folder).served_logits(TEXTS)
    assert np.mean(got.argmax(-1) == ref.argmax(-1)) >= 0.9
