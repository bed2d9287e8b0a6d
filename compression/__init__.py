"""BERT Compression Studio: smaller, faster variants of a BERT-style classifier.

Python API (names resolve on first use, so ``import compression`` is light and the
serving side never imports torch)::

    from compression import load_recipe, evaluate_dir
    from compression.build import build
    summary = build(load_recipe("recipes/demo.yaml"), "variants")

``build`` and ``optimize`` are both modules and the functions inside them; import the
functions from their modules (``compression.build``, ``compression.optimize``).
"""
from importlib import import_module

_HOME = {
    "Recipe": "recipe", "load_recipe": "recipe", "save_recipe": "recipe",
    "evaluate_dir": "build", "compare": "optimize",
    "publish": "hub", "publish_space": "hub",
    "load_family": "serving",
    "CompressionError": "errors", "USER_ERRORS": "errors",
}

__all__ = sorted(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'compression' has no attribute {name!r}")
    return getattr(import_module(f".{_HOME[name]}", __name__), name)
