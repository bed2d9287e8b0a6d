"""The variant folder: the contract between build, evaluate, report, hub, app and optimize.

A build folder holds ``recipe.yaml``, ``teacher/`` and one folder per variant, each::

    model.onnx | model.safetensors | pytorch_int8.pt   the model (its format in compression_config.json)
    config.json, tokenizer.json (+ tokenizer files)    what transformers/optimum/the app load
    compression_config.json                            recipe, chain, versions: reloads identically
    metrics.json                                       every measured number, written last

A folder is built under ``.tmp-<name>-<pid>`` and moved into place only once its
metrics.json is written, so a folder that exists is finished. Resume rule: a folder
whose metrics.json carries the current fingerprint and whose model file exists is
skipped. Nothing else in the package knows these names.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .runtime import FORMAT_ONNX, FORMAT_TORCH, FORMAT_TORCH_INT8, OnnxRunner, Runner

FORMAT_VERSION = 1
MODEL_FILES = {FORMAT_ONNX: "model.onnx", FORMAT_TORCH: "model.safetensors", FORMAT_TORCH_INT8: "pytorch_int8.pt"}
METRICS, CONFIG = "metrics.json", "compression_config.json"
RECIPE, REPORT = "recipe.yaml", "report.json"
TEACHER = "teacher"
REQUIRED_METRICS = ("variant", "accuracy", "latency_p50_ms", "size_mb", "fingerprint")
LIBRARIES = ("torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "huggingface_hub")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, data: dict) -> None:
    """Write through a temporary file and rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def read_metrics(folder: Path) -> dict | None:
    return read_json(Path(folder) / METRICS)


def write_metrics(folder: Path, metrics: dict) -> None:
    write_json(Path(folder) / METRICS, metrics)


def read_config(folder: Path) -> dict:
    return read_json(Path(folder) / CONFIG) or {}


def variant_format(folder: Path) -> str:
    fmt = read_config(folder).get("format")
    if fmt:
        return fmt
    return FORMAT_ONNX if (Path(folder) / MODEL_FILES[FORMAT_ONNX]).is_file() else FORMAT_TORCH


def model_file(folder: Path) -> Path:
    return Path(folder) / MODEL_FILES[variant_format(folder)]


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in LIBRARIES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def write_config(folder: Path, name: str, steps: list, recipe: dict, base_model: str, fmt: str,
                 fingerprint: str | None = None) -> dict:
    cc = {
        "format_version": FORMAT_VERSION,
        "variant": name,
        "format": fmt,
        "model_file": MODEL_FILES[fmt],
        "base_model": base_model,
        "steps": steps,
        "recipe": recipe,
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if fingerprint is not None:
        cc["fingerprint"] = fingerprint
    write_json(Path(folder) / CONFIG, cc)
    return cc


def is_finished(folder: Path, fingerprint: str) -> bool:
    """The resume rule: measured, for this exact recipe, with its model on disk."""
    metrics = read_metrics(folder)
    return (
        metrics is not None
        and all(k in metrics for k in REQUIRED_METRICS)
        and metrics["fingerprint"] == fingerprint
        and model_file(folder).is_file()
    )


def list_variants(root: Path, teacher: bool = True) -> list[Path]:
    """Finished variant folders under ``root`` (those with metrics.json), teacher first."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [f for f in sorted(root.iterdir()) if f.is_dir() and not f.name.startswith(".") and (f / METRICS).is_file()]
    if not teacher:
        folders = [f for f in folders if f.name != TEACHER]
    return sorted(folders, key=lambda f: f.name != TEACHER)


def load_rows(root: Path) -> list[dict]:
    """metrics.json of the teacher and every finished variant, teacher first."""
    return [read_metrics(f) for f in list_variants(root)]


def temp_folder(root: Path, name: str) -> Path:
    tmp = Path(root) / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def clear_stale(root: Path) -> None:
    for stale in Path(root).glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def move_into_place(tmp: Path, final: Path) -> None:
    """The last act of building a folder: replace any older one with the finished one."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def load_runner(folder: Path, threads: int = 1, max_length: int | None = None) -> Runner:
    """Open any variant folder (ONNX, PyTorch, PyTorch int8) as a Runner."""
    folder = Path(folder)
    fmt = variant_format(folder)
    if fmt == FORMAT_ONNX:
        return OnnxRunner(folder, threads, max_length)
    from .modeling import load_classifier, load_tokenizer
    from .runtime import TorchRunner

    if fmt == FORMAT_TORCH:
        model, tok = load_classifier(str(folder))
        return TorchRunner(model, tok, threads, max_length, model_file(folder), fmt)
    from .registry import get_step
    from .steps import quantize  # noqa: F401  (registers the terminal steps and their loaders)

    chain = read_config(folder).get("steps") or []
    step = get_step(next(iter(chain[-1])) if chain else "torch_dynamic_int8")
    if step.load is None:
        raise ValueError(f"{folder}: format {fmt!r} has no loader")
    return TorchRunner(step.load(folder), load_tokenizer(str(folder)), threads, max_length, model_file(folder), fmt)
