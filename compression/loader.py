"""Open any variant folder for measurement, PyTorch formats included (build side).

:mod:`compression.artifacts` opens ONNX folders without torch; the PyTorch teacher and the
PyTorch reference rows (torch int8, bitsandbytes) need torch and transformers, and their
loaders are declared by the step that wrote them. ``evaluate``, ``compare`` and the build use
this module; the app and the Space never import it.
"""
from __future__ import annotations

from pathlib import Path

from . import artifacts
from .errors import ArtifactError
from .runtime import Runner, TorchRunner


def load_runner(folder: Path, threads: int = 1, max_length: int | None = None) -> Runner:
    """Any variant folder (ONNX, PyTorch, PyTorch int8) as a Runner; ArtifactError when it cannot be opened."""
    folder = Path(folder)
    fmt = artifacts.variant_format(folder)
    if fmt == artifacts.FORMAT_ONNX:
        return artifacts.open_onnx(folder, threads, max_length)
    from .modeling import load_classifier, load_tokenizer

    length = max_length or artifacts.max_length(folder)
    try:
        if fmt == artifacts.FORMAT_TORCH:
            model, tok = load_classifier(str(folder))
            return TorchRunner(model, tok, threads, length, artifacts.model_file(folder))
        from . import steps  # noqa: F401  (registers the terminal steps and their loaders)
        from .registry import get_step

        chain = artifacts.read_config(folder).get("steps") or []
        step = get_step(next(iter(chain[-1])) if chain else "torch_dynamic_int8")
        if step.load is None:
            raise ArtifactError(f"{folder}: format {fmt!r} has no loader")
        return TorchRunner(step.load(folder), load_tokenizer(str(folder)), threads, length, artifacts.model_file(folder))
    except (OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, ArtifactError):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ArtifactError(f"{folder}: cannot load the {fmt} model ({type(exc).__name__}: {first}); rebuild this variant") from None
