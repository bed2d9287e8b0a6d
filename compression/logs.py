"""Third-party log lines that are expected in a build, muted where they are known to be harmless.

ORT's tools log WARNINGs that read like user errors in situations the build creates on purpose:
``fusion_attention`` asks for "a correct input hidden size" whenever pruned heads make a layer's
attention narrower than the model (the fused op handles it; tests compare the fused logits), and
the 4-bit quantizer announces every opset/IR upgrade it makes for int4. ``muted`` drops exactly
those lines (matched by their start) for the duration of one call and leaves every other line alone.
Torch-free leaf: imports nothing of the package.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager


class _Drop(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextmanager
def muted(loggers: tuple[str, ...], prefixes: tuple[str, ...]):
    """Inside the block, records of ``loggers`` whose message template starts with one of ``prefixes`` are dropped."""
    drop = _Drop(prefixes)
    targets = [logging.getLogger(name) for name in loggers]
    for logger in targets:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in targets:
            logger.removeFilter(drop)
