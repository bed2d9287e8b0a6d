"""QAT: fake-quant training exports to a QDQ graph with int8 weights."""
import numpy as np
import onnx
from onnx import numpy_helper

from compression.artifacts import open_onnx


def test_qat_variant_is_qdq_int8(built_qat):
    out = built_qat
    model = onnx.load(str(out / "qat" / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in model.graph.initializer if numpy_helper.to_array(t).dtype == np.int8 and len(t.dims) == 2]
    assert len(int8_weights) >= 12 + 1  # 2 layers x 6 Linear + word embeddings
    assert (out / "fp32" / "model.onnx").stat().st_size / (out / "qat" / "model.onnx").stat().st_size >= 2.5


def test_qat_predictions_follow_teacher(built_qat):
    from conftest import synthetic

    out = built_qat
    texts = [t for t, _ in synthetic(60, 21)]
    ref = open_onnx(out / "fp32", max_len=32).logits(texts).argmax(-1)
    got = open_onnx(out / "qat", max_len=32).logits(texts).argmax(-1)
    assert (got == ref).mean() >= 0.9
