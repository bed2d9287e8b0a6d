"""The variant folder: the one contract between build, evaluate, report, hub, app and optimize.

A build folder holds ``recipe.yaml``, ``progress.json`` (while and after a build),
``teacher/`` and one folder per variant, each::

    model.onnx | model.safetensors | pytorch_int8.pt   the model (its format in compression_config.json)
    config.json, tokenizer.json (+ tokenizer files)    what transformers/optimum/the app load
    compression_config.json                            recipe, chain, versions: reloads identically
    predictions.json                                   per-sentence predictions (evaluation, out of domain)
    metrics.json                                       every measured number and a manifest, written last

A folder is built under ``.tmp-<name>-<pid>`` and moved into place by :func:`finish` only
once every file is written, so a folder that exists is complete. Resume rule: a folder is
reused when its metrics.json carries the current fingerprint and every file in its manifest
still has the size and hash it had when it was finished (a truncated or corrupt model is
rebuilt). No other module names these files or reads compression_config.json.

Torch-free: the app and the Space import this module with onnxruntime, tokenizers and numpy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .errors import ArtifactError
from .modeling import DEFAULT_BASE_HUB_ID, usable_length
from .runtime import OnnxRunner

FORMAT_VERSION = 2
FORMAT_ONNX, FORMAT_TORCH, FORMAT_TORCH_INT8 = "onnx", "pytorch", "pytorch-int8"
MODEL_FILES = {FORMAT_ONNX: "model.onnx", FORMAT_TORCH: "model.safetensors", FORMAT_TORCH_INT8: "pytorch_int8.pt"}
SERVABLE = (FORMAT_ONNX,)                    # what the app and the Space run
PUBLISHABLE = (FORMAT_ONNX, FORMAT_TORCH)    # what from_pretrained loads; torch int8 is a local reference row
MODEL_CONFIG, TOKENIZER, TOKENIZER_CONFIG = "config.json", "tokenizer.json", "tokenizer_config.json"
METRICS, CONFIG, PREDICTIONS = "metrics.json", "compression_config.json", "predictions.json"
RECIPE, REPORT, PROGRESS, LOCK = "recipe.yaml", "report.json", "progress.json", ".build.lock"
CACHE = ".cache"
TEACHER = "teacher"
REQUIRED_METRICS = ("variant", "accuracy", "latency_p50_ms", "size_mb", "fingerprint")
LIBRARIES = ("torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "huggingface_hub")
ORT_MOBILE = "model.ort"


# ------------------------------------------------------------------ JSON files
def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def read_model_config(folder: Path) -> dict:
    return read_json(Path(folder) / MODEL_CONFIG) or {}


def read_predictions(folder: Path) -> dict | None:
    return read_json(Path(folder) / PREDICTIONS)


# ------------------------------------------------------------------ what a folder holds
def variant_format(folder: Path) -> str:
    fmt = read_config(folder).get("format")
    if fmt:
        return fmt
    return FORMAT_ONNX if (Path(folder) / MODEL_FILES[FORMAT_ONNX]).is_file() else FORMAT_TORCH


def model_file(folder: Path) -> Path:
    return Path(folder) / MODEL_FILES[variant_format(folder)]


def servable(folder: Path) -> bool:
    return variant_format(folder) in SERVABLE


def publishable(folder: Path) -> bool:
    return variant_format(folder) in PUBLISHABLE


def required_files(fmt: str) -> tuple[str, ...]:
    """What a finished folder of this format must hold to be published or served."""
    return (MODEL_CONFIG, CONFIG, METRICS, TOKENIZER, MODEL_FILES[fmt])


def hub_files(fmt: str) -> list[str]:
    """What the Space downloads from a published repo: everything to serve an ONNX variant
    (not model.ort, not the card), only the measured numbers of a reference row."""
    if fmt in SERVABLE:
        return ["*.json", "*.txt", MODEL_FILES[fmt]]
    return [CONFIG, METRICS, MODEL_CONFIG]


def max_length(folder: Path) -> int:
    """The recipe's max_length for this folder, capped by the model's position table."""
    requested = (read_config(folder).get("recipe") or {}).get("dataset", {}).get("max_length")
    return usable_length(read_model_config(folder), requested)


def _pad_token(folder: Path) -> str | None:
    pad = (read_json(Path(folder) / TOKENIZER_CONFIG) or {}).get("pad_token")
    return pad.get("content") if isinstance(pad, dict) else pad


def open_onnx(folder: Path, threads: int = 1, max_len: int | None = None) -> OnnxRunner:
    """An ONNX variant folder as a runner; ArtifactError (one line naming the folder) when it cannot be."""
    folder = Path(folder)
    missing = [f for f in (MODEL_FILES[FORMAT_ONNX], TOKENIZER, MODEL_CONFIG) if not (folder / f).is_file()]
    if missing:
        raise ArtifactError(f"{folder}: missing {', '.join(missing)}; rebuild this variant")
    config = read_model_config(folder)
    if not config:
        raise ArtifactError(f"{folder}: {MODEL_CONFIG} is not valid JSON; rebuild this variant")
    try:
        return OnnxRunner(folder / MODEL_FILES[FORMAT_ONNX], folder / TOKENIZER, config, max_len or max_length(folder),
                          _pad_token(folder), threads)
    except Exception as exc:  # ORT's InvalidProtobuf/Fail, a tokenizer.json that does not parse, ...
        first = (str(exc).strip().splitlines() or [""])[0].replace(f"{folder}/", "")[:160]
        raise ArtifactError(f"{folder}: cannot load the model or tokenizer ({type(exc).__name__}: {first}); "
                            "the file is corrupt or truncated: rebuild this variant") from None


# ------------------------------------------------------------------ integrity
def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: Path) -> dict[str, list]:
    """{file: [bytes, sha256]} of every file a finished folder holds, metrics.json aside."""
    folder = Path(folder)
    return {p.name: [p.stat().st_size, _digest(p)] for p in sorted(folder.iterdir()) if p.is_file() and p.name != METRICS}


def verify(folder: Path) -> str | None:
    """None when the folder is as it was finished, else what is wrong (one line)."""
    folder = Path(folder)
    metrics = read_metrics(folder)
    if metrics is None:
        return f"{folder}: no readable {METRICS}"
    files = metrics.get("manifest")
    if not files:  # a folder from before manifests: the model file must at least exist
        return None if model_file(folder).is_file() else f"{folder}: no {model_file(folder).name}"
    for name, (size, digest) in files.items():
        path = folder / name
        if not path.is_file():
            return f"{folder}: {name} is missing"
        if path.stat().st_size != size or _digest(path) != digest:
            return f"{folder}: {name} changed since it was built (truncated or corrupt)"
    return None


def is_finished(folder: Path, fingerprint: str) -> bool:
    """The resume rule: measured, for this exact recipe, every file as it was finished."""
    metrics = read_metrics(folder)
    return (
        metrics is not None
        and all(k in metrics for k in REQUIRED_METRICS)
        and metrics["fingerprint"] == fingerprint
        and verify(folder) is None
    )


# ------------------------------------------------------------------ writing a folder
def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in LIBRARIES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def base_model_id(recipe_base: str | None) -> str | None:
    """The Hub id of the base model, where one is known: the offline default is
    all-MiniLM-L6-v2; a Hub id is itself; a local folder is not claimed to be anything."""
    if recipe_base is None:
        return DEFAULT_BASE_HUB_ID
    local = recipe_base.startswith((".", "/", "~")) or Path(recipe_base).expanduser().exists()
    return None if local else recipe_base


def temp_folder(root: Path, name: str) -> Path:
    tmp = Path(root) / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def clear_stale(root: Path) -> None:
    for stale in Path(root).glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_config(folder: Path, name: str, steps: list, recipe: dict, base_model: str, fmt: str,
                 fingerprint: str | None = None) -> dict:
    """compression_config.json: the recipe, the chain, the versions; written before measuring."""
    cc = {
        "format_version": FORMAT_VERSION,
        "variant": name,
        "format": fmt,
        "model_file": MODEL_FILES[fmt],
        "base_model": base_model,
        "base_model_id": base_model_id(recipe.get("base_model")),
        "steps": steps,
        "recipe": recipe,
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if fingerprint is not None:
        cc["fingerprint"] = fingerprint
    write_json(Path(folder) / CONFIG, cc)
    return cc


def finish(tmp: Path, final: Path, metrics: dict, predictions: dict | None = None) -> dict:
    """The last act of building a folder: predictions, a manifest and metrics.json written, then
    the finished folder replaces any older one in one rename. Returns the metrics as written."""
    tmp, final = Path(tmp), Path(final)
    missing = [k for k in REQUIRED_METRICS if k not in metrics]
    if missing:
        raise ValueError(f"{final.name}: metrics lack {missing}")
    if predictions is not None:
        write_json(tmp / PREDICTIONS, predictions)
    metrics = {**metrics, "manifest": manifest(tmp)}
    write_metrics(tmp, metrics)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return metrics


def update_metrics(folder: Path, metrics: dict, predictions: dict | None = None) -> None:
    """Re-measured numbers for a finished folder (``evaluate``): its files and manifest are kept."""
    old = read_metrics(folder) or {}
    if predictions is not None:
        write_json(Path(folder) / PREDICTIONS, predictions)
    fresh = {**metrics}
    for key, value in old.items():  # build-time facts (steps, notes) that were not re-measured
        fresh.setdefault(key, value)
    if predictions is not None and "manifest" in fresh:
        fresh["manifest"][PREDICTIONS] = manifest(folder)[PREDICTIONS]
    write_metrics(folder, fresh)


# ------------------------------------------------------------------ the build folder
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
    """metrics.json of the teacher and every finished variant, teacher first (unreadable ones skipped)."""
    return [m for m in (read_metrics(f) for f in list_variants(root)) if m and all(k in m for k in REQUIRED_METRICS)]


def read_recipe_dict(root: Path) -> dict | None:
    """The build's recipe as saved (YAML or JSON), or None."""
    path = Path(root) / RECIPE
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def data_description(recipe: dict | None) -> dict:
    """What the numbers were measured on, from a saved recipe: names for cards, reports and the app.

    Keys: name (display name), hub_id / hub_config (a Hub dataset, or None), split, task,
    tags, ood_name (None without an out-of-domain set), label_names."""
    d = (recipe or {}).get("dataset") or {}
    e = (recipe or {}).get("evaluation") or {}
    path = str(d.get("path") or "")
    local = path.startswith((".", "/", "~")) or Path(path).suffix != "" or Path(path).exists() or not path
    hub_id, hub_config = d.get("hub_id"), d.get("hub_config")
    if hub_id is None and not local:  # a Hub id in the recipe: glue/sst2 is (glue, sst2)
        name, _, config = path.partition("/")
        hub_id, hub_config = ("nyu-mll/glue", config) if name == "glue" else (path, None)
    if d.get("eval_path"):
        default_name, split = Path(d["eval_path"]).name, "test"
    else:  # no recipe at all (an empty folder): no name to show
        default_name, split = (Path(path).name or None) if local else path, d.get("eval_split") or "validation"
    ood = e.get("ood_path")
    return {
        "name": d.get("name") or default_name,
        "hub_id": hub_id,
        "hub_config": hub_config,
        "split": split,
        "task": d.get("task") or "Text classification",
        "tags": list(d.get("tags") or []),
        "ood_name": (e.get("ood_name") or Path(ood).name) if ood else None,
        "label_names": list(d.get("label_names") or []),
    }
