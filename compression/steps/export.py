"""PyTorch -> ONNX export and fp16 conversion.

Export goes through optimum's exporter (it knows the input names and dynamic
axes of every transformers architecture). fp16 keeps float32 inputs/outputs so
callers feed the same int64 ids and read float32 logits from every variant.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from .. import artifacts
from ..errors import OnnxError
from ..registry import register_step

log = logging.getLogger(__name__)
OPSET = 17
ONNX_FILE = artifacts.MODEL_FILES[artifacts.FORMAT_ONNX]  # what optimum writes; the variant folder mirrors it


def export_onnx(model, out_path: Path, opset: int = OPSET) -> Path:
    """Export a sequence classifier to ``out_path`` (a single model.onnx file).

    Steps that need a fix-up of the exported graph say so with ``after_export``
    (QAT folds its weight quantizers); the build runs those, not this function."""
    from optimum.exporters.onnx import onnx_export_from_model

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        onnx_export_from_model(model.eval(), tmp, opset=opset, task="text-classification", do_validation=False)
        shutil.move(str(Path(tmp) / ONNX_FILE), out_path)
    log.info("exported %s (%.1f MB)", out_path, out_path.stat().st_size / 1e6)
    return out_path


def load_onnx(path: Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise OnnxError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise OnnxError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    return model


@dataclass(frozen=True)
class ExportConfig:
    """Export the current PyTorch model to ONNX (fp32). No options; opset is fixed
    by the package so every variant shares one opset."""


@register_step("export", ExportConfig, stage="onnx", tags=("onnx",), relation="quantized")
def _export_step(onnx_path, cfg, ctx):
    """The pipeline exports on entering the ONNX stage; this step only marks where."""
    return onnx_path


@dataclass(frozen=True)
class Fp16Config:
    """Convert weights and activations to float16.

    Fields:
        keep_io_types: keep float32 graph inputs/outputs (callers need no change).
        op_block_list: ops left in float32 (numerically touchy ones by default).
    """

    keep_io_types: bool = True
    op_block_list: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.op_block_list is not None:
            object.__setattr__(self, "op_block_list", tuple(self.op_block_list))


def to_fp16(onnx_path: Path, cfg: Fp16Config) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = load_onnx(onnx_path)
    kwargs = {"keep_io_types": cfg.keep_io_types}
    if cfg.op_block_list is not None:
        kwargs["op_block_list"] = list(cfg.op_block_list)
    half = convert_float_to_float16(model, **kwargs)
    onnx.save(half, str(onnx_path))
    return Path(onnx_path)


@register_step("fp16", Fp16Config, stage="onnx", tags=("fp16",), relation="quantized")
def _fp16_step(onnx_path, cfg, ctx):
    """Half-precision weights: 2x smaller; on CPU mostly a size win, not a speed win."""
    return to_fp16(onnx_path, cfg)


@dataclass(frozen=True)
class MobileOrtConfig:
    """Also write ``model.ort`` (ORT format for onnxruntime-mobile / React Native) and
    ``required_operators.config`` (what a reduced-operator build needs) beside model.onnx.
    No options: the ORT format is converted with the fixed optimisation style."""


def to_ort(onnx_path: Path) -> Path:
    """model.ort (+ required_operators.config) next to ``onnx_path``; the ONNX file is unchanged."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    folder = Path(onnx_path).parent
    with tempfile.TemporaryDirectory(dir=folder) as work:
        work = Path(work)
        shutil.copy(onnx_path, work / ONNX_FILE)
        convert_onnx_models_to_ort(work, output_dir=work, optimization_styles=[OptimizationStyle.Fixed], enable_type_reduction=True)
        shutil.move(str(work / artifacts.ORT_MOBILE), folder / artifacts.ORT_MOBILE)
        config = next(work.glob("*.config"), None)
        if config is not None:
            shutil.move(str(config), folder / "required_operators.config")
    log.info("wrote model.ort (%.1f MB) for onnxruntime-mobile", (folder / artifacts.ORT_MOBILE).stat().st_size / 1e6)
    return folder / artifacts.ORT_MOBILE


@register_step("mobile_ort", MobileOrtConfig, stage="onnx", tags=("onnx", "ort-format", "mobile"), relation="quantized")
def _mobile_step(onnx_path, cfg, ctx):
    """Also write model.ort + required_operators.config for onnxruntime-mobile (last step of a chain)."""
    to_ort(onnx_path)
    return onnx_path
