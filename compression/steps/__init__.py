"""Every technique, one module each; importing this package registers their steps.

To add a technique: write ``steps/<name>.py`` with a config dataclass and a function
decorated with ``@register_step`` (see ``registry.Step`` for what it can declare), and
import it here.
"""
from . import distill, export, fuse, lowbit, prune, qat, quantize, vocab  # noqa: F401

__all__ = ["distill", "export", "fuse", "lowbit", "prune", "qat", "quantize", "vocab"]
