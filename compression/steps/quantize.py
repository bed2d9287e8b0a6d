"""Int8 quantization: ORT dynamic and static (through optimum's ORTQuantizer),
and PyTorch dynamic int8 kept as the seeds' reference row.

Quantization runs on the *unfused* exported graph. Optimum's O2 fusion turns
MatMul+Add+... into contrib ops whose weights lose their type info, and
quantizing such a graph fails with "Unable to find data type for weight_name";
``quantize`` therefore runs ORT's symbolic shape inference first when it sees
fused ops, which restores the missing types.
"""
from __future__ import annotations

import logging
import platform
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .. import artifacts
from ..errors import StepNotApplicable
from ..machine import cpu_flags
from ..registry import register_step
from .export import load_onnx

log = logging.getLogger(__name__)
PRESETS = ("auto", "avx512_vnni", "avx512", "avx2", "arm64")
FUSED_OPS = {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "FastGelu", "BiasGelu"}


def detect_preset(flags: list[str] | None = None, machine: str | None = None) -> str:
    """The best optimum preset for a CPU (arm64 / avx512_vnni / avx512 / avx2); this one by default."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = set(cpu_flags() if flags is None else flags)
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def _check_preset(preset):
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")


@dataclass(frozen=True)
class QuantizeDynamicConfig:
    """ORT dynamic int8: weights int8 offline, activations quantized per batch.

    Fields:
        preset: optimum CPU preset; ``auto`` picks from this CPU's flags.
        per_channel: one scale per output channel. Default true, as optimum's presets:
            on MiniLM it keeps 98% agreement with fp32 where per-tensor keeps 96%.
        operators: ops to quantize (None: optimum's default, embeddings' Gather included).
    """

    preset: str = "auto"
    per_channel: bool = True
    operators: tuple[str, ...] | None = None

    def __post_init__(self):
        _check_preset(self.preset)
        if self.operators is not None:
            object.__setattr__(self, "operators", tuple(self.operators))


@dataclass(frozen=True)
class QuantizeStaticConfig:
    """ORT static int8 (QDQ), activation ranges calibrated on training sentences.

    Fields:
        preset: optimum CPU preset (``auto`` = from this CPU).
        calibration_samples: training sentences used to calibrate.
        method: ``minmax`` | ``percentiles`` | ``entropy``.
        percentile: the range kept by ``percentiles`` calibration (of each activation's histogram).
        symmetric_activations / symmetric_weights: zero-point 0 when true.
        per_channel: per-output-channel weight scales.
        operators: ops to quantize (None: MatMul and Gather, the bulk of a BERT).
        matmuls: ``weights`` quantizes only MatMuls with a constant weight (the Linear layers);
            attention's activation x activation products (Q·Kᵀ, softmax·V) stay float, which is
            where a statically fixed scale hurts most. ``all`` quantizes every MatMul.
        report_ops: the N ops whose int8 outputs are furthest from the float graph's (SQNR in dB
            on calibration sentences) go into metrics.json, so a worse row says why. 0: none.
        keep_float: regular expressions of node names left in float. ``layer\\.\\d+/output/dense`` keeps
            BERT's FFN output projections: their outputs carry outlier channels (|x| near 200 on
            MiniLM) that, quantized per tensor, drown the next LayerNorm (11 dB SQNR where the layer
            before kept 25; BENCHMARKS.md).
        smooth: SmoothQuant's migration strength alpha (0 = off). Before calibration, each group of
            quantized weight MatMuls sharing an input gets that input divided per channel by
            s = max|x|^alpha / max|W row|^(1 - alpha) (a Mul) and the weights' rows multiplied by s: the
            same function in float, with the activation's outlier channels (a LayerNorm output's
            reaches 15-18x its median channel on MiniLM) moved into the per-channel weight scales.
            The Mul is read by the group only, so the residual Add keeps the float tensor (ORT's QDQ
            pair is otherwise read by every consumer). 0.5 is the paper's default; on two MiniLM
            teachers it cut the logit error of the adopted setting by a quarter to a third, same size
            and latency (BENCHMARKS.md).
    """

    preset: str = "auto"
    calibration_samples: int = 128
    method: str = "minmax"
    percentile: float = 99.999
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    per_channel: bool = False
    operators: tuple[str, ...] | None = None
    matmuls: str = "all"
    report_ops: int = 5
    keep_float: tuple[str, ...] = ()
    smooth: float = 0.0

    def __post_init__(self):
        _check_preset(self.preset)
        object.__setattr__(self, "keep_float", tuple(self.keep_float or ()))
        if not 0.0 <= self.smooth <= 1.0:
            raise ValueError(f"smooth (SmoothQuant's alpha) must be in [0, 1], got {self.smooth}")
        if self.matmuls not in ("weights", "all"):
            raise ValueError(f"matmuls must be weights or all, got {self.matmuls!r}")
        if not 50 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.method not in ("minmax", "percentiles", "entropy"):
            raise ValueError(f"method must be minmax, percentiles or entropy, got {self.method!r}")
        if self.calibration_samples < 1:
            raise ValueError("calibration_samples must be >= 1")
        if self.operators is not None:
            object.__setattr__(self, "operators", tuple(self.operators))


@dataclass(frozen=True)
class TorchDynamicInt8Config:
    """PyTorch ``quantize_dynamic`` on nn.Linear (the seeds' route). The variant
    stays in PyTorch: a reference row, not an ONNX model."""


def _qconfig(preset: str, is_static: bool, **kwargs):
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = detect_preset() if preset == "auto" else preset
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if preset == "arm64":  # arm64 has no symmetric-activation switch of its own
        kwargs.pop("use_symmetric_activations", None)
    return getattr(AutoQuantizationConfig, preset)(is_static=is_static, **kwargs), preset


def _prepare(onnx_path: Path, work: Path) -> Path:
    """Copy the model into ``work`` and restore weight types on fused graphs."""
    model = load_onnx(onnx_path)
    target = work / artifacts.MODEL_FILES[artifacts.FORMAT_ONNX]
    if FUSED_OPS & {n.op_type for n in model.graph.node}:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        log.info("fused graph detected: running symbolic shape inference before quantization")
        model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    onnx.save(model, str(target))
    return target


def _run(onnx_path: Path, qconfig, calibrate=None) -> Path:
    """Quantize ``onnx_path`` in place; ``calibrate(quantizer, work_dir)`` returns static ranges."""
    from optimum.onnxruntime import ORTQuantizer

    onnx_path = Path(onnx_path)
    with tempfile.TemporaryDirectory(dir=onnx_path.parent) as tmp:
        tmp = Path(tmp)
        quantizer = ORTQuantizer.from_pretrained(tmp, file_name=_prepare(onnx_path, tmp).name)
        ranges = calibrate(quantizer, tmp) if calibrate is not None else None
        out = quantizer.quantize(quantization_config=qconfig, save_dir=tmp / "q", calibration_tensors_range=ranges)
        shutil.move(str(Path(out) / "model_quantized.onnx"), onnx_path)
    return onnx_path


def quantize_dynamic(onnx_path: Path, cfg: QuantizeDynamicConfig) -> Path:
    qconfig, preset = _qconfig(
        cfg.preset, False, per_channel=cfg.per_channel, operators_to_quantize=list(cfg.operators) if cfg.operators else None
    )
    log.info("ORT dynamic int8 (%s, per_channel=%s)", preset, cfg.per_channel)
    return _run(onnx_path, qconfig)


def weight_matmuls(onnx_path: Path) -> list[str]:
    """Names of the MatMul nodes whose second input is a constant: the Linear layers."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    consts = {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in consts]


def sentence_feeds(columns: dict[str, list]) -> list[dict]:
    """Tokenized columns (padded or not) as one unpadded batch-1 feed per sentence."""
    names = list(columns)
    feeds = []
    for row in zip(*columns.values()):
        keep = np.asarray(row[names.index("attention_mask")]) == 1 if "attention_mask" in names else slice(None)
        feeds.append({k: np.asarray(v, dtype=np.int64)[keep][None, :] for k, v in zip(names, row)})
    return feeds


def activation_absmax(onnx_path: Path, tensors: list[str], feeds: list[dict]) -> dict[str, np.ndarray]:
    """Per last-axis channel, the largest |value| each named tensor of the graph takes over ``feeds``."""
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.load(str(onnx_path))
    graph_outputs = [o.name for o in probe.graph.output]
    for x in tensors:
        if x not in graph_outputs:
            probe.graph.output.append(helper.make_empty_tensor_value_info(x))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    amax = {x: 0.0 for x in tensors}
    for feed in feeds:
        for x, value in zip(tensors, sess.run(tensors, {k: v for k, v in feed.items() if k in inputs})):
            amax[x] = np.maximum(amax[x], np.abs(value.reshape(-1, value.shape[-1])).max(0))
    return amax


def smooth_activations(onnx_path: Path, feeds: list[dict], alpha: float, nodes: list[str] | None = None) -> int:
    """SmoothQuant (Xiao et al., 2023) in place on an ONNX graph: for each input shared by weight MatMuls
    (among ``nodes``; None: all), x_j -> x_j / s_j and W[j, :] -> s_j * W[j, :] with
    s_j = max|x_j|^alpha / max_k|W[j, k]|^(1 - alpha), max|x_j| over ``feeds``. The float graph computes
    the same logits; per-tensor int8 of x then loses less to outlier channels. Returns the Muls inserted."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    groups: dict[str, list] = {}
    for n in model.graph.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" else None
        if w is not None and len(w.dims) == 2 and uses[w.name] == 1 and (nodes is None or n.name in nodes):
            groups.setdefault(n.input[0], []).append(n)
    if not groups:
        return 0
    amax = activation_absmax(onnx_path, list(groups), feeds)
    order = list(model.graph.node)
    for k, (x, members) in enumerate(groups.items()):
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in members]
        wmax = np.max([np.abs(w).max(1) for w in weights], axis=0)
        s = (np.maximum(amax[x], 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)).astype(np.float32)
        for n, w in zip(members, weights):
            inits[n.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(w.dtype), n.input[1]))
        name = f"{members[0].name.rsplit('/', 1)[0]}/SmoothQuant"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), f"{name}/inv_scale"))
        mul = helper.make_node("Mul", [x, f"{name}/inv_scale"], [f"{name}/output_{k}"], name=f"{name}/Mul")
        for n in members:
            n.input[0] = mul.output[0]
        order.insert(order.index(members[0]), mul)
    del model.graph.node[:]
    model.graph.node.extend(order)
    onnx.save(model, str(onnx_path))
    return len(groups)


def quantize_static(onnx_path: Path, cfg: QuantizeStaticConfig, calibration_inputs: dict[str, list]) -> Path:
    """``calibration_inputs``: tokenized columns named like the graph inputs."""
    from datasets import Dataset
    from optimum.onnxruntime.configuration import AutoCalibrationConfig

    operators = list(cfg.operators) if cfg.operators else ["MatMul", "Gather"]
    nodes = None
    if cfg.matmuls == "weights":
        model = onnx.load(str(onnx_path), load_external_data=False)
        nodes = weight_matmuls(onnx_path) + [n.name for n in model.graph.node if n.op_type != "MatMul" and n.op_type in operators]
    excluded = None
    if cfg.keep_float:
        model = onnx.load(str(onnx_path), load_external_data=False)
        excluded = [n.name for n in model.graph.node if any(re.search(k, n.name) for k in cfg.keep_float)]
        nodes = [n for n in nodes if n not in excluded] if nodes is not None else None
    if cfg.smooth and "MatMul" in operators:
        smoothed = [n for n in weight_matmuls(onnx_path) if (nodes is None or n in nodes) and n not in (excluded or ())]
        count = smooth_activations(onnx_path, sentence_feeds(calibration_inputs), cfg.smooth, smoothed)
        log.info("SmoothQuant (alpha %.2f): %d MatMul inputs rescaled", cfg.smooth, count)
    qconfig, preset = _qconfig(
        cfg.preset,
        True,
        per_channel=cfg.per_channel,
        use_symmetric_activations=cfg.symmetric_activations,
        use_symmetric_weights=cfg.symmetric_weights,
        operators_to_quantize=operators,
        nodes_to_quantize=nodes,
        nodes_to_exclude=excluded,
    )
    calib_ds = Dataset.from_dict(calibration_inputs)
    extra = {"percentile": cfg.percentile} if cfg.method == "percentiles" else {}
    calib_cfg = getattr(AutoCalibrationConfig, cfg.method)(calib_ds, **extra)
    log.info("ORT static int8 (%s, %s calibration on %d sentences)", preset, cfg.method, len(calib_ds))

    def calibrate(quantizer, tmp):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return quantizer.fit(dataset=calib_ds, calibration_config=calib_cfg, operators_to_quantize=operators,
                                 onnx_augmented_model_name=tmp / "augmented.onnx")

    return _run(onnx_path, qconfig, calibrate)


def torch_dynamic_int8(model):
    import torch
    from torch.ao.quantization import quantize_dynamic as tq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tq(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)


@dataclass(frozen=True)
class BnbInt8Config:
    """bitsandbytes LLM.int8() weights for PyTorch users (the seeds' ``use_bnb``).
    Built only where bitsandbytes imports and a CUDA GPU is present."""


def bnb_int8(model):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise StepNotApplicable("bitsandbytes is not installed (pip install bitsandbytes)") from None
    import torch

    if not torch.cuda.is_available():
        raise StepNotApplicable("bitsandbytes 8-bit needs a CUDA GPU; there is none here")
    import tempfile

    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return AutoModelForSequenceClassification.from_pretrained(tmp, quantization_config=BitsAndBytesConfig(load_in_8bit=True))


def _save_torch_int8(state, folder) -> str:
    import torch

    torch.save(state.model.state_dict(), Path(folder) / artifacts.MODEL_FILES[artifacts.FORMAT_TORCH_INT8])
    return artifacts.FORMAT_TORCH_INT8


def _load_torch_int8(folder):
    import torch
    from transformers import AutoConfig

    from ..modeling import classifier_from_config

    model = torch_dynamic_int8(classifier_from_config(AutoConfig.from_pretrained(folder)))
    model.load_state_dict(torch.load(Path(folder) / artifacts.MODEL_FILES[artifacts.FORMAT_TORCH_INT8], weights_only=False))
    return model


def _save_bnb(state, folder) -> str:
    state.model.save_pretrained(folder)
    return artifacts.FORMAT_TORCH


@register_step("bnb_int8", BnbInt8Config, stage="terminal", tags=("int8", "quantized", "bitsandbytes"),
               relation="quantized", save=_save_bnb)
def _bnb_step(state, cfg, ctx):
    """bitsandbytes 8-bit PyTorch model (GPU only; skipped with a reason elsewhere)."""
    state.model = bnb_int8(state.model)
    return state


@register_step("quantize_dynamic", QuantizeDynamicConfig, stage="onnx", tags=("int8", "quantized", "onnx"), relation="quantized")
def _dynamic_step(onnx_path, cfg, ctx):
    """ORT dynamic int8 through optimum's ORTQuantizer."""
    return quantize_dynamic(onnx_path, cfg)


def op_errors(float_path: Path, quant_path: Path, feeds: list[dict], top: int = 5) -> list[dict]:
    """The ``top`` MatMul/Gather outputs of ``quant_path`` furthest from ``float_path``'s on ``feeds``:
    [{node, op, sqnr_db}], worst first (signal-to-quantization-noise ratio over all feeds)."""
    import numpy as np
    import onnxruntime as ort

    float_model = onnx.load(str(float_path))
    targets = [(n.name, n.op_type, n.output[0]) for n in float_model.graph.node if n.op_type in ("MatMul", "Gather")]
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}

    def outputs(path, model=None):
        model = model or onnx.load(str(path))
        names = {o.name for o in model.graph.output}
        have = {o for n in model.graph.node for o in n.output}
        for _, _, out in targets:
            if out in have and out not in names:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(out))
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        wanted = [o.name for o in sess.get_outputs() if o.name in {t[2] for t in targets}]
        inputs = {i.name for i in sess.get_inputs()}
        return [dict(zip(wanted, sess.run(wanted, {k: v for k, v in f.items() if k in inputs}))) for f in feeds]

    for ref, got in zip(outputs(float_path, float_model), outputs(quant_path)):
        for name, value in ref.items():
            if name in got:
                signal[name] = signal.get(name, 0.0) + float(np.sum(value.astype(np.float64) ** 2))
                noise[name] = noise.get(name, 0.0) + float(np.sum((value.astype(np.float64) - got[name]) ** 2))
    rows = [{"node": node, "op": op, "sqnr_db": round(10 * float(np.log10(signal[out] / max(noise[out], 1e-30))), 1)}
            for node, op, out in targets if out in signal and signal[out] > 0]
    return sorted(rows, key=lambda r: r["sqnr_db"])[:top]


@register_step("quantize_static", QuantizeStaticConfig, stage="onnx", tags=("int8", "quantized", "static", "onnx"),
               relation="quantized", needs_data=True)
def _static_step(onnx_path, cfg, ctx):
    """ORT static QDQ int8, calibrated on a training-data sample."""
    float_copy = Path(onnx_path).with_name("float-reference.onnx")
    shutil.copyfile(onnx_path, float_copy)
    try:
        quantize_static(onnx_path, cfg, ctx.calibration_inputs(onnx_path, cfg.calibration_samples, padded=cfg.method != "minmax"))
        if cfg.report_ops:
            feeds = sentence_feeds(ctx.calibration_inputs(float_copy, 16))
            notes = getattr(ctx, "notes", None)
            if notes is not None:
                notes["static_worst_ops"] = op_errors(float_copy, onnx_path, feeds, cfg.report_ops)
    finally:
        float_copy.unlink(missing_ok=True)
    return onnx_path


@register_step("torch_dynamic_int8", TorchDynamicInt8Config, stage="terminal", tags=("int8", "quantized", "pytorch"),
               relation="quantized", save=_save_torch_int8, load=_load_torch_int8)
def _torch_step(state, cfg, ctx):
    """PyTorch dynamic int8 of nn.Linear (reference row, not served by the ONNX app)."""
    state.model = torch_dynamic_int8(state.model)
    return state
