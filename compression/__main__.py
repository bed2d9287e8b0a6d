"""Command line: ``python -m compression {build,evaluate,steps} ...``."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path


def _build(args):
    from . import build, load_recipe

    recipe = load_recipe(args.recipe)
    if args.base_model:
        recipe = dataclasses.replace(recipe, base_model=args.base_model)
    if args.data:
        recipe = dataclasses.replace(recipe, dataset=dataclasses.replace(recipe.dataset, path=args.data))
    summary = build(recipe, args.out, only=args.only, base_dir=Path(args.recipe).resolve().parent, force=args.force)
    print(Path(args.out) / "report.md")
    print(f"recommended: {summary['recommended']}")


def _evaluate(args):
    from . import evaluate_dir

    summary = evaluate_dir(args.out)
    print(Path(args.out) / "report.md")
    print(f"recommended: {summary['recommended']}")


def _publish(args):
    from .hub import publish

    result = publish(args.variants, args.namespace, args.prefix, args.private, args.dry_run)
    for name, repo in result["repos"].items():
        print(f"{name}: {repo}")
    if result["collection"]:
        print(f"collection: {result['collection']}")


def _publish_space(args):
    import json

    from .hub import publish_space

    repos = args.repos
    if not repos:
        report = json.loads((Path(args.variants) / "report.json").read_text())
        repos = [f"{args.namespace}/{args.prefix}-{r['variant']}" for r in report["rows"] if r.get("format") == "onnx"]
    print(publish_space(args.namespace, repos, args.name, args.private))


def _steps(args):
    from .registry import steps

    for name, step in sorted(steps().items()):
        print(f"{name:22s} [{step.stage}] {step.doc.splitlines()[0] if step.doc else ''}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compression", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("build", help="fine-tune the teacher and build every variant of a recipe")
    p.add_argument("--recipe", default="recipes/quick.yaml")
    p.add_argument("--out", default="variants")
    p.add_argument("--base-model", help="HF id or local folder (default: the recipe's, else offline MiniLM)")
    p.add_argument("--data", help="override dataset.path (glue/sst2, a folder or a file)")
    p.add_argument("--only", nargs="+", metavar="VARIANT", help="build only these variants")
    p.add_argument("--force", action="store_true", help="rebuild finished variants too")
    p.set_defaults(fn=_build)

    p = sub.add_parser("evaluate", help="re-measure every variant in one run and rewrite the report")
    p.add_argument("out", nargs="?", default="variants")
    p.set_defaults(fn=_evaluate)

    p = sub.add_parser("publish", help="push every variant to the Hub with a model card (token: HF_TOKEN or login)")
    p.add_argument("variants", nargs="?", default="variants")
    p.add_argument("--namespace", required=True)
    p.add_argument("--prefix", default="minilm-sst2")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="build the cards and print the plan; upload nothing")
    p.set_defaults(fn=_publish)

    p = sub.add_parser("publish-space", help="create/update the Gradio Space running app.py over the published variants")
    p.add_argument("--namespace", required=True)
    p.add_argument("--name", default="bert-compression-studio")
    p.add_argument("--variants", default="variants", help="build folder whose ONNX variants were published")
    p.add_argument("--prefix", default="minilm-sst2")
    p.add_argument("--repos", nargs="*", help="explicit variant repo ids (default: from --variants and --prefix)")
    p.add_argument("--private", action="store_true")
    p.set_defaults(fn=_publish_space)

    p = sub.add_parser("steps", help="list the registered steps")
    p.set_defaults(fn=_steps)

    args = parser.parse_args(argv)
    # Root at WARNING: ORT's quantizer logs every tensor at INFO through the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("compression").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from . import USER_ERRORS

    try:
        args.fn(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
