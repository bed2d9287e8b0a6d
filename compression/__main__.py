"""Command line: ``python -m compression {build,evaluate,report,steps,optimize,compare,publish,publish-space}``.

One spelling per concept: the build folder is ``--variants-dir`` everywhere, variant
names are ``--only``, data files are ``--dataset`` (a recipe's data), ``--calibration-data``
and ``--eval-data``. Library errors arrive phrased for the API and leave here as one line
on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

VARIANTS_DIR = "variants"


def _print_summary(summary: dict, folder) -> None:
    print(Path(folder) / "report.md")
    for name, reason in (summary.get("skipped") or {}).items():
        print(f"skipped {name}: {reason}")
    print(f"recommended: {summary['recommended']}")


def _build(args):
    from .build import build
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if args.base_model:
        recipe = dataclasses.replace(recipe, base_model=args.base_model)
    if args.dataset:
        recipe = dataclasses.replace(recipe, dataset=dataclasses.replace(recipe.dataset, path=args.dataset))
    summary = build(recipe, args.variants_dir, only=args.only, base_dir=Path(args.recipe).resolve().parent, force=args.force)
    _print_summary(summary, args.variants_dir)


def _evaluate(args):
    from .build import evaluate_dir

    _print_summary(evaluate_dir(args.variants_dir), args.variants_dir)


def _report(args):
    from .build import report_dir

    summary = report_dir(args.variants_dir, args.tolerance, args.criterion)
    rule = summary["recommend_rule"]
    print(f"rule: {rule['criterion']} {rule['tolerance']:g} (may lose {rule['allowed_loss'] * 100:.2f} points)")
    _print_summary(summary, args.variants_dir)


def _publish(args):
    from .hub import publish

    result = publish(args.variants_dir, args.namespace, args.prefix, args.private, args.dry_run)
    for name, repo in result["repos"].items():
        print(f"{name}: {repo}")
    if result["collection"]:
        print(f"collection: {result['collection']}")


def _publish_space(args):
    from . import artifacts
    from .hub import publish_space

    repos = args.repos
    if not repos:
        folders = artifacts.list_variants(Path(args.variants_dir))
        repos = [f"{args.namespace}/{args.prefix}-{f.name}" for f in folders if artifacts.publishable(f)]
    print(publish_space(args.namespace, repos, args.name, args.private))


def _optimize(args):
    from .optimize import optimize

    summary = optimize(args.model, args.variants_dir, args.only, args.pruning_amount, args.threshold, args.calibration_data,
                       args.eval_data, args.text_column, args.label_column, args.mobile)
    _print_summary(summary, args.variants_dir)


def _compare(args):
    from .data import read_file
    from .errors import RecipeError
    from .optimize import compare

    texts = list(args.text or [])
    if args.eval_data:
        texts += read_file(args.eval_data, args.text_column, None, require_labels=False).texts
    if not texts:
        raise RecipeError("give sentences with --text or a file with --eval-data")
    result = compare(args.original, args.variants, texts, args.threads)
    print("| model | size MB | p50 ms | sent/s | agreement | max logit diff | flips |\n|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['model']} | {r['size_mb']} | {r['latency_p50_ms']} | {r['throughput_per_s']} | {r['agreement']:.4f} "
              f"| {r['max_logit_diff']:.4f} | {len(r['flipped'])} |")
    for r in result["rows"]:
        for t in r["flipped"][:10]:
            print(f"flipped in {r['model']}: {t}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def _steps(args):
    from . import steps as _  # noqa: F401  (importing the package registers every step)
    from .registry import steps as registered

    for name, step in sorted(registered().items()):
        print(f"{name:26s} [{step.stage}] {step.doc.splitlines()[0] if step.doc else ''}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m compression", description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    folder = dict(default=VARIANTS_DIR, metavar="DIR", help=f"the build folder (default {VARIANTS_DIR})")

    p = sub.add_parser("build", help="fine-tune the teacher and build every variant of a recipe")
    p.add_argument("--recipe", default="recipes/demo.yaml")
    p.add_argument("--variants-dir", **folder)
    p.add_argument("--base-model", help="HF id or local folder (default: the recipe's, else offline MiniLM)")
    p.add_argument("--dataset", help="replace the recipe's dataset.path (glue/sst2, a folder or a file)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="build only these variants")
    p.add_argument("--force", action="store_true",
                   help="rebuild the selected variants even when finished (a finished teacher is reused: delete its folder to retrain)")
    p.set_defaults(fn=_build)

    p = sub.add_parser("evaluate", help="re-measure every variant in one run and rewrite the report")
    p.add_argument("--variants-dir", **folder)
    p.set_defaults(fn=_evaluate)

    p = sub.add_parser("report", help="rewrite the report from the measured rows (no re-measuring), optionally with another accuracy rule")
    p.add_argument("--variants-dir", **folder)
    p.add_argument("--tolerance", type=float, help="accuracy the recommended row may give up (0.01 = 1 point or 1%%; default: the recipe's)")
    p.add_argument("--criterion", choices=["absolute", "relative"], help="points, or a share of the teacher's accuracy (default: the recipe's)")
    p.set_defaults(fn=_report)

    p = sub.add_parser("publish", help="push every variant to the Hub with a model card (token: HF_TOKEN or login)")
    p.add_argument("--variants-dir", **folder)
    p.add_argument("--namespace", required=True)
    p.add_argument("--prefix", default="minilm-sst2")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="build the cards and print the plan; upload nothing")
    p.set_defaults(fn=_publish)

    p = sub.add_parser("publish-space", help="create/update the Gradio Space serving the published variants")
    p.add_argument("--variants-dir", **folder)
    p.add_argument("--namespace", required=True)
    p.add_argument("--name", default="bert-compression-studio")
    p.add_argument("--prefix", default="minilm-sst2")
    p.add_argument("--repos", nargs="*", help="explicit variant repo ids (default: from --variants-dir and --prefix)")
    p.add_argument("--private", action="store_true")
    p.set_defaults(fn=_publish_space)

    p = sub.add_parser("optimize", help="optimized variants of an already fine-tuned classifier (no re-training)")
    p.add_argument("--model", required=True, help="fine-tuned sequence classifier: folder or HF id")
    p.add_argument("--variants-dir", **folder)
    p.add_argument("--only", nargs="+", metavar="NAME", default=["fp32", "fp16", "int8-dynamic"],
                   help="named variants to build: fp32 fp16 int8-dynamic int8-static int8-emb4 torch-int8 bnb-int8 "
                        "pruned pruned-int8 thresholded distilled-half qat-int8")
    p.add_argument("--pruning-amount", type=float)
    p.add_argument("--threshold", type=float)
    p.add_argument("--calibration-data", help="TSV/CSV/JSONL with text+labels: calibration, KD recovery, QAT")
    p.add_argument("--eval-data", help="TSV/CSV/JSONL with text+labels for accuracy (else: agreement on probe sentences)")
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--label-column", default="label")
    p.add_argument("--mobile", action="store_true", help="also write model.ort (+ reduced-operator config)")
    p.set_defaults(fn=_optimize)

    p = sub.add_parser("compare", help="size, latency and prediction differences of variants vs. an original")
    p.add_argument("original", help="the original model folder (or a variant folder)")
    p.add_argument("variants", nargs="+", help="variant folders to compare with it")
    p.add_argument("--text", action="append", help="a sentence (repeatable)")
    p.add_argument("--eval-data", help="file of sentences (TSV/CSV/JSONL; labels not needed)")
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the result as JSON here")
    p.set_defaults(fn=_compare)

    p = sub.add_parser("steps", help="list the registered steps")
    p.set_defaults(fn=_steps)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    # Root at WARNING: ORT's quantizer logs every tensor at INFO through the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("compression").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .errors import USER_ERRORS

    try:
        args.fn(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
