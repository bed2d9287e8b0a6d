"""Int8 variants: quantized nodes present, >= 3x smaller, predictions kept."""
import re
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


def _calibration(folder, n=32):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(TEXTS[:n], truncation=True, max_length=32, padding="longest")
    names = {i.name for i in onnx.load(str(folder / "model.onnx")).graph.input}
    return {k: list(v) for k, v in enc.items() if k in names}


def _with_outlier_channel(built, tmp_path, name="v", factor=30.0):
    """The fixture's fp32 graph with channel 7 of the attention LayerNorms' scale and shift grown
    ``factor`` times: the outlier channel a trained BERT's LayerNorm outputs carry (MiniLM: ~15x)."""
    _, out, _ = built
    folder = tmp_path / name
    shutil.copytree(out / "fp32", folder)
    model = onnx.load(str(folder / "model.onnx"))
    grown = 0
    for t in model.graph.initializer:
        if "attention.output.LayerNorm" in t.name:
            value = onnx.numpy_helper.to_array(t).copy()
            value[7] *= factor
            t.CopyFrom(onnx.numpy_helper.from_array(value, t.name))
            grown += 1
    assert grown >= 2, "fixture graph has no attention LayerNorm initializers to grow"
    onnx.save(model, str(folder / "model.onnx"))
    return folder


def _margin(folder):
    logits = open_onnx(folder, max_len=32).logits(TEXTS)
    return logits[:, 1] - logits[:, 0]


def _channel_ratio(path, feeds, matmul_suffix):
    """max/median over channels of max|x| at the input of the first MatMul named ``*matmul_suffix``."""
    from compression.steps.quantize import activation_absmax

    x = next(n.input[0] for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul" and n.name.endswith(matmul_suffix))
    amax = activation_absmax(path, [x], feeds)[x]
    return amax.max() / np.median(amax)


def test_smoothing_keeps_the_float_function_and_flattens_the_outlier(built, tmp_path):
    from compression.steps.quantize import sentence_feeds, smooth_activations, weight_matmuls

    folder = _with_outlier_channel(built, tmp_path)
    path = folder / "model.onnx"
    feeds = sentence_feeds(_calibration(folder))
    assert all(f["input_ids"].shape[1] == f["attention_mask"].sum() for f in feeds), "padding left in a feed"
    before_ratio = _channel_ratio(path, feeds, "intermediate/dense/MatMul")
    before = _margin(folder)
    graph = onnx.load(str(path))
    inputs = {n.input[0] for n in graph.graph.node if n.name in set(weight_matmuls(path))}
    inserted = smooth_activations(path, feeds, 0.5)
    assert inserted == len(inputs)  # one Mul per distinct input: Q, K and V share theirs
    assert sum(n.op_type == "Mul" and n.name.endswith("SmoothQuant/Mul") for n in onnx.load(str(path)).graph.node) == inserted
    np.testing.assert_allclose(_margin(folder), before, atol=1e-4 * max(1.0, np.abs(before).max()))
    after_ratio = _channel_ratio(path, feeds, "intermediate/dense/MatMul")
    assert before_ratio > 8 and after_ratio < before_ratio / 2, (before_ratio, after_ratio)


def test_smoothing_lowers_static_int8_error(built, tmp_path):
    """Same graph, same calibration: SmoothQuant's static int8 margins sit closer to the float graph's."""
    errors = {}
    for alpha in (0.0, 0.5):
        folder = _with_outlier_channel(built, tmp_path, f"a{alpha}")
        ref = _margin(folder)
        cfg = QuantizeStaticConfig(calibration_samples=32, matmuls="weights", per_channel=True, smooth=alpha)
        quantize_static(folder / "model.onnx", cfg, _calibration(folder))
        errors[alpha] = float(np.abs(_margin(folder) - ref).mean())
        smoothed = any(n.name.endswith("SmoothQuant/Mul") for n in onnx.load(str(folder / "model.onnx")).graph.node)
        assert smoothed == (alpha > 0)
    assert errors[0.5] < 0.3 * errors[0.0], errors  # 0.02x here; a Mul by 1 (isolation, no rescale) gives 0.57x


def test_keep_float_leaves_matching_matmuls_unquantized(built, tmp_path):
    _, out, _ = built
    folder = tmp_path / "keep"
    shutil.copytree(out / "fp32", folder)
    cfg = QuantizeStaticConfig(calibration_samples=16, matmuls="weights", keep_float=(r"layer\.\d+/output/dense",), smooth=0.5)
    quantize_static(folder / "model.onnx", cfg, _calibration(folder, 16))
    model = onnx.load(str(folder / "model.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    fed = {n.name: getattr(producer.get(n.input[0]), "op_type", None) for n in model.graph.node if n.op_type == "MatMul"}
    kept = [k for k in fed if re.search(r"layer\.\d+/output/dense", k)]
    assert kept and all(fed[k] != "DequantizeLinear" for k in kept)
    assert all(fed[k] == "DequantizeLinear" for k in fed if "intermediate/dense" in k)
    # the kept MatMuls' input is not rescaled either (their weights keep their values): no SmoothQuant Mul feeds them
    by_name = {n.name: n for n in model.graph.node}
    assert all(not producer[by_name[k].input[0]].name.endswith("SmoothQuant/Mul") for k in kept)
    assert any(n.name.endswith("SmoothQuant/Mul") for n in model.graph.node)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_smooth_outside_0_1_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match=r"smooth .*must be in \[0, 1\]"):
        QuantizeStaticConfig(smooth=bad)


def test_op_errors_ranks_the_damaged_matmul_first(built, tmp_path):
    """op_errors is the report behind metrics.json's ``static_worst_ops``: an identical graph has no noise
    anywhere, and the one MatMul whose weights were damaged (and what reads its output) comes first."""
    from compression.steps.quantize import op_errors, sentence_feeds

    _, out, _ = built
    ref = out / "fp32" / "model.onnx"
    feeds = sentence_feeds(_calibration(out / "fp32", 8))
    same = op_errors(ref, ref, feeds, top=50)
    assert same and all(r["sqnr_db"] > 200 for r in same), same[:3]
    model = onnx.load(str(ref))
    node = next(n for n in model.graph.node if n.op_type == "MatMul" and n.name.endswith("layer.1/intermediate/dense/MatMul"))
    weight = next(t for t in model.graph.initializer if t.name in node.input)
    value = onnx.numpy_helper.to_array(weight)
    noisy = value + np.random.default_rng(0).normal(0, 0.3 * np.abs(value).mean(), value.shape).astype(value.dtype)
    weight.CopyFrom(onnx.numpy_helper.from_array(noisy, weight.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    every = op_errors(ref, damaged, feeds, top=50)
    rows = every[:3]
    assert len(rows) == 3 and rows[0]["node"] == node.name and rows[0]["op"] == "MatMul"
    assert [r["sqnr_db"] for r in every] == sorted(r["sqnr_db"] for r in every)
    assert all(r["sqnr_db"] > 200 for r in every if "layer.0/" in r["node"])  # nothing before the damage moved


def test_static_int8_metrics_name_its_worst_ops(built):
    """The built static row says where its int8 error is: real MatMul/Gather nodes of the float graph, worst first."""
    import json

    _, out, _ = built
    worst = json.loads((out / "int8-static" / "metrics.json").read_text())["static_worst_ops"]
    names = {n.name: n.op_type for n in onnx.load(str(out / "fp32" / "model.onnx")).graph.node}
    assert 0 < len(worst) <= QuantizeStaticConfig().report_ops
    assert all(names.get(r["node"]) == r["op"] for r in worst), worst
    assert [r["sqnr_db"] for r in worst] == sorted(r["sqnr_db"] for r in worst)
    assert all(r["sqnr_db"] < 200 for r in worst)  # quantized: finite error, unlike an identical graph
