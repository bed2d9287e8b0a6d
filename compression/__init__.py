"""BERT Compression Studio: smaller, faster variants of a BERT-style classifier.

Python API::

    from compression import load_recipe, build, evaluate_dir
    summary = build(load_recipe("recipes/quick.yaml"), "variants/")
"""
from .config import Recipe, RecipeError, load_recipe, save_recipe
from .data import DataError
from .export import OnnxError
from .hub import PublishError
from .pipeline import BuildError, build, evaluate_dir
from .teacher import ModelError

USER_ERRORS = (RecipeError, DataError, ModelError, BuildError, OnnxError, PublishError)

__all__ = ["Recipe", "load_recipe", "save_recipe", "build", "evaluate_dir", "USER_ERRORS"]
