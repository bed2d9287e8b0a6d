"""Int8 variants: quantized nodes present, >= 3x smaller, predictions kept."""
import shutil

import numpy as np
import onnx
import pytest

from compression.artifacts import open_onnx
from compression.steps.quantize import (
    FUSED_OPS,
    QuantizeDynamicConfig,
    QuantizeStaticConfig,
    detect_preset,
    quantize_dynamic,
    quantize_static,
)
from conftest import synthetic

TEXTS = [t for t, _ in synthetic(40, 11)]


def ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_dynamic_graph_has_integer_matmuls_and_is_3x_smaller(built):
    _, out, _ = built
    found = ops(out / "int8-dynamic" / "model.onnx")
    assert "MatMulInteger" in found and "DynamicQuantizeLinear" in found
    fp32 = (out / "fp32" / "model.onnx").stat().st_size
    assert fp32 / (out / "int8-dynamic" / "model.onnx").stat().st_size >= 3.0


def test_static_graph_is_qdq_and_3x_smaller(built):
    _, out, _ = built
    found = ops(out / "int8-static" / "model.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= found
    fp32 = (out / "fp32" / "model.onnx").stat().st_size
    assert fp32 / (out / "int8-static" / "model.onnx").stat().st_size >= 3.0


def test_int8_predictions_stay_close(built):
    _, out, _ = built
    ref = open_onnx(out / "fp32", max_len=32).logits(TEXTS)
    for name in ("int8-dynamic", "int8-static"):
        got = open_onnx(out / name, max_len=32).logits(TEXTS)
        assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9, name


def test_o2_fused_graph_quantizes(built, tmp_path):
    """optimum's O2 fusion + ORT quantization used to fail with
    'Unable to find data type for weight_name'; quantize_dynamic must handle it."""
    from onnxruntime.transformers.optimizer import optimize_model

    _, out, _ = built
    fused = optimize_model(str(out / "fp32" / "model.onnx"), model_type="bert", num_heads=4, hidden_size=128)
    folder = tmp_path / "fused"
    shutil.copytree(out / "fp32", folder)
    fused.save_model_to_file(str(folder / "model.onnx"))
    assert FUSED_OPS & ops(folder / "model.onnx"), "fixture graph is not fused"
    ref = open_onnx(folder, max_len=32).logits(TEXTS)
    quantize_dynamic(folder / "model.onnx", QuantizeDynamicConfig())
    assert {"MatMulInteger", "DynamicQuantizeLinear"} & ops(folder / "model.onnx") or "QAttention" in ops(folder / "model.onnx")
    got = open_onnx(folder, max_len=32).logits(TEXTS)
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("symmetric", [True, False])
def test_static_symmetric_and_asymmetric(built, tmp_path, symmetric):
    recipe, out, _ = built
    from transformers import AutoTokenizer

    folder = tmp_path / "v"
    shutil.copytree(out / "fp32", folder)
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(TEXTS[:16], truncation=True, max_length=32)
    names = {i.name for i in onnx.load(str(folder / "model.onnx")).graph.input}
    calib = {k: list(v) for k, v in enc.items() if k in names}
    quantize_static(folder / "model.onnx", QuantizeStaticConfig(symmetric_activations=symmetric, calibration_samples=16), calib)
    model = onnx.load(str(folder / "model.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    # activation quantizers: QuantizeLinear nodes fed by a tensor computed at run time
    activation_zp = [
        inits[n.input[2]] for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and len(n.input) > 2 and n.input[2] in inits
    ]
    assert activation_zp, "no activation quantizers found"
    centred = [np.all(z == (128 if z.dtype == np.uint8 else 0)) for z in activation_zp]
    if symmetric:
        assert all(centred)
    else:
        assert not all(centred)


@pytest.mark.parametrize("flags, machine, preset", [
    (["avx2"], "x86_64", "avx2"),                                 # AMD/Intel without AVX-512: VNNI kernels absent
    (["avx2", "avx512f"], "x86_64", "avx512"),
    (["avx2", "avx512f", "avx512_vnni"], "x86_64", "avx512_vnni"),
    (["avx2", "avx512f", "avx512_vnni"], "aarch64", "arm64"),     # the machine decides before x86 flags
    ([], "arm64", "arm64"),
])
def test_preset_follows_the_cpu(flags, machine, preset):
    assert detect_preset(flags, machine) == preset


@pytest.mark.parametrize("cpuinfo, preset", [
    ({"flags": "fpu sse2 avx2 fma"}, "avx2"),                                       # a Zen 3 / older Xeon
    ({"flags": "avx2 avx512f avx512bw"}, "avx512"),
    ({"flags": "avx2 avx512f avx512_vnni avx512_bf16 amx_int8"}, "avx512_vnni"),     # Sapphire Rapids / Zen 4
])
def test_the_default_preset_reads_this_machines_cpuinfo(monkeypatch, cpuinfo, preset):
    """No flags given: detect_preset reads /proc/cpuinfo through machine.cpu_flags (here a fabricated one)."""
    import platform

    from compression import machine

    monkeypatch.setattr(machine, "_cpuinfo", lambda: {"model name": "Fake CPU", **cpuinfo})
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert detect_preset() == preset
    assert machine.cpu_name() == "Fake CPU"
