"""Publish variant folders to the Hugging Face Hub (or any HF_ENDPOINT), with cards.

One model repo per variant (``{prefix}-{variant}``), a collection for the family,
and a Gradio Space running app.py. Uploads go through huggingface_hub's
``upload_folder``, which skips unchanged files, so re-publishing an unchanged
variant makes no commit. The token comes from HF_TOKEN or the login cache and is
never printed, logged or written anywhere.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from . import artifacts
from . import steps as _steps  # noqa: F401  (registers the steps whose docs and relations cards use)
from .errors import AuthError, PublishError
from .registry import chain_relation, get_step
from .report import EDGE_SIZE, EDGE_SPEED, accuracy_rule, delta_text, tolerance_text

log = logging.getLogger(__name__)
TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"
REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_URL = os.environ.get("BCS_PROJECT_URL")  # where the cards link to the source; none by default
RETRY_STATUS = (429, 500, 502, 503, 504)           # worth another try: rate limits and server trouble
MAX_RETRY_AFTER = 120.0                            # seconds: a longer Retry-After fails with a clear line instead


def plan(variants_dir: Path) -> list[Path]:
    """Variant folders to publish, each checked complete before anything is uploaded."""
    variants_dir = Path(variants_dir)
    if not (variants_dir / artifacts.REPORT).is_file():
        raise PublishError(f"{variants_dir}: no {artifacts.REPORT}; build the variants first")
    folders, problems = [], []
    for folder in sorted(p for p in variants_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        fmt = artifacts.variant_format(folder)
        if not artifacts.publishable(folder):
            log.info("skipping %s: %s variants are a local reference row, not a loadable model", folder.name, fmt)
            continue
        missing = [f for f in artifacts.required_files(fmt) if not (folder / f).is_file()]
        if missing:
            problems.append(f"{folder.name}: missing {', '.join(missing)}")
        folders.append(folder)
    if problems:
        raise PublishError("refusing to publish incomplete variant folders (nothing was uploaded): " + "; ".join(problems))
    return folders


def describe_step(call: dict) -> str:
    (name, options), = call.items()
    doc = get_step(name).doc.splitlines()[0] if get_step(name).doc else name
    opts = ", ".join(f"{k}={v}" for k, v in options.items() if v is not None)
    return f"`{name}`{f' ({opts})' if opts else ''}: {doc}"


def build_card(folder: Path, repo_id: str, teacher_repo: str | None, teacher_metrics: dict | None, recommended: bool,
               edge: bool = False):
    """The model card of one variant folder: every name and number from its saved recipe and metrics; ``edge``:
    the report found it at least EDGE_SPEED x as fast as Optimum's int8 route at EDGE_SIZE of its size or less."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    m = artifacts.read_metrics(folder)
    cc = artifacts.read_config(folder)
    data = artifacts.data_description(cc.get("recipe"))
    is_teacher = folder.name == artifacts.TEACHER
    onnx = artifacts.variant_format(folder) == artifacts.FORMAT_ONNX
    own_base = cc.get("base_model_id")
    base = own_base if is_teacher else (teacher_repo or own_base)
    # the format tag comes from what the repo holds, not the chain: distilled/pruned chains ship model.onnx too
    tags = ["text-classification", "bert-compression-studio"] + data["tags"] + list(m.get("tags") or [])
    tags += ["onnx"] if onnx else ["pytorch", "safetensors"]
    task = data["task"]
    where = dict(dataset_type=data["hub_id"] or data["name"], dataset_name=data["name"], dataset_split=data["split"],
                 **({"dataset_config": data["hub_config"]} if data["hub_config"] else {}))
    results = [EvalResult(task_type="text-classification", task_name=task, metric_type=k, metric_value=round(m[k], 4), **where)
               for k in ("accuracy", "f1") if k in m]
    if "ood_accuracy" in m and data["ood_name"]:  # both: the balanced one is what the report and the app show
        results += [EvalResult(task_type="text-classification", task_name=f"{task} (out of domain)",
                               dataset_type=data["ood_name"], dataset_name=data["ood_name"], dataset_split="test",
                               metric_type=k, metric_name=name, metric_value=round(m[key], 4))
                    for k, name, key in (("accuracy", "Accuracy", "ood_accuracy"),
                                         ("balanced_accuracy", "Balanced accuracy", "ood_balanced_accuracy")) if key in m]
    card_data = ModelCardData(
        language="en", license="apache-2.0", library_name="onnx" if onnx else "transformers",
        pipeline_tag="text-classification", base_model=base, datasets=[data["hub_id"]] if data["hub_id"] else None,
        metrics=["accuracy", "f1"], tags=sorted(set(tags)), model_name=repo_id.split("/")[-1], eval_results=results,
    )
    if base:
        card_data.base_model_relation = "finetune" if is_teacher else chain_relation([next(iter(c)) for c in cc["steps"]])
    example = "a gripping , funny film ." if data["label_names"] == ["negative", "positive"] else "an example sentence"
    if onnx:
        snippet = (f'from optimum.onnxruntime import ORTModelForSequenceClassification\nfrom transformers import AutoTokenizer, pipeline\n\n'
                   f'model = ORTModelForSequenceClassification.from_pretrained("{repo_id}")\n'
                   f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
                   f'classify = pipeline("text-classification", model=model, tokenizer=tokenizer)\n'
                   f'print(classify("{example}"))')
    else:
        snippet = (f'from transformers import pipeline\n\nclassify = pipeline("text-classification", model="{repo_id}")\n'
                   f'print(classify("{example}"))')
    t = teacher_metrics or {}
    fmt = lambda key, f: (f.format(t[key]) if key in t else "")  # noqa: E731
    tview = {"accuracy_s": fmt("accuracy", "{:.4f}"), "f1_s": fmt("f1", "{:.4f}"), "size_s": fmt("size_mb", "{:.2f}"),
             "gzip_s": fmt("gzip_mb", "{:.2f}"), "params_s": fmt("params", "{:,}"), "throughput_s": fmt("throughput_per_s", "{:.0f}"),
             "latency_s": (f"{t['latency_p50_ms']:.2f} / {t['latency_p95_ms']:.2f}" if t else ""),
             "ood_s": (f"{t['ood_accuracy']:.4f} / {t['ood_balanced_accuracy']:.4f}" if "ood_accuracy" in t else "")}
    labels = ", ".join(data["label_names"]) or ", ".join(artifacts.read_model_config(folder).get("id2label", {}).values())
    steps = [describe_step(s) for s in cc["steps"]] or [f"fine-tuned on {data['name']} with transformers' Trainer (this is the teacher)"]
    summary = ("the fp32 PyTorch teacher" if is_teacher else " → ".join(next(iter(s)) for s in cc["steps"]))
    rule = tolerance_text(*accuracy_rule(cc.get("recipe")), (teacher_metrics or {}).get("accuracy"))
    return ModelCard.from_template(
        card_data, template_str=TEMPLATE.read_text(), repo_name=repo_id.split("/")[-1], variant=folder.name, summary=summary,
        teacher_repo=None if is_teacher else teacher_repo, base_model=own_base or cc.get("base_model"),
        recommended=recommended, edge=edge, edge_speed=f"{EDGE_SPEED:g}", edge_size=f"{EDGE_SIZE:g}",
        steps=steps, m=m, t=tview, snippet=snippet, onnx=onnx, mobile=(folder / artifacts.ORT_MOBILE).is_file(),
        runtime="ONNX Runtime" if onnx else "PyTorch", project_url=PROJECT_URL, data=data, labels=labels,
        delta=delta_text(m), rule=rule,
    )


def _retry(fn, what: str, attempts: int, delay: float):
    import requests
    from huggingface_hub.utils import HfHubHTTPError

    for i in range(attempts):
        try:
            return fn()
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                raise AuthError(str(status)) from None
            if status not in RETRY_STATUS or i == attempts - 1:
                raise
            wait = delay * 2**i
            if status == 429:  # the Hub says how long to back off; never less than our own schedule
                try:
                    wait = max(wait, min(float(exc.response.headers.get("Retry-After", 0)), MAX_RETRY_AFTER))
                except (TypeError, ValueError):
                    pass
            log.warning("%s: HTTP %s, retrying in %.1fs", what, status, wait)
            time.sleep(wait)
            continue
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            if i == attempts - 1:
                raise
            log.warning("%s: connection problem (%s), retrying in %.1fs", what, type(exc).__name__, delay * 2**i)
        time.sleep(delay * 2**i)


def publish(variants_dir, namespace: str, prefix: str = "minilm-sst2", private: bool = False, dry_run: bool = False,
            token: str | None = None, attempts: int = 4, retry_delay: float = 1.0) -> dict:
    """Publish every variant; returns {"repos": {variant: repo_id}, "commits": {...}, "collection": slug}."""
    from huggingface_hub import HfApi

    variants_dir = Path(variants_dir)
    folders = plan(variants_dir)
    report = artifacts.read_json(variants_dir / artifacts.REPORT)
    recommended = report.get("recommended")
    edge = {r["variant"] for r in report.get("rows", []) if r.get("edge_over_optimum_int8")}
    teacher_metrics = artifacts.read_metrics(variants_dir / artifacts.TEACHER)
    repos = {f.name: f"{namespace}/{prefix}-{f.name}" for f in folders}
    teacher_repo = repos.get("teacher")
    api = HfApi(token=token)
    done, commits = [], {}
    with tempfile.TemporaryDirectory() as staging:
        for folder in folders:
            repo_id = repos[folder.name]
            stage = Path(staging) / folder.name
            shutil.copytree(folder, stage)
            build_card(folder, repo_id, teacher_repo, teacher_metrics, folder.name == recommended,
                       folder.name in edge).save(stage / "README.md")
            if dry_run:
                print(f"would publish {folder} -> {repo_id}: {', '.join(sorted(p.name for p in stage.iterdir()))}")
                continue
            try:
                _retry(lambda: api.create_repo(repo_id, private=private, exist_ok=True), f"create {repo_id}", attempts, retry_delay)
                info = _retry(lambda: api.upload_folder(repo_id=repo_id, folder_path=stage,
                                                        commit_message=f"Publish {folder.name} variant"),
                              f"upload {repo_id}", attempts, retry_delay)
            except AuthError as exc:
                raise AuthError(f"token lacks write access to {namespace} (HTTP {exc}); "
                                f"published: {done or 'nothing'}; not published: {[r for r in repos.values() if r not in done]}") from None
            except Exception as exc:
                raise PublishError(f"publishing {repo_id} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                   f"published: {done or 'nothing'}; not published: {[r for r in repos.values() if r not in done]}") from None
            commits[folder.name] = info.oid
            done.append(repo_id)
            log.info("published %s (%s)", repo_id, info.oid[:8])
    collection = None
    if not dry_run:
        data = artifacts.data_description(artifacts.read_recipe_dict(variants_dir))
        collection = _retry(lambda: make_collection(api, namespace, prefix, repos, recommended, private, data["name"]),
                            "collection", attempts, retry_delay)
    return {"repos": repos, "commits": commits, "collection": collection, "recommended": recommended}


def make_collection(api, namespace, prefix, repos, recommended, private, data_name: str = "one dataset") -> str:
    col = api.create_collection(title=f"{prefix} compressed variants", namespace=namespace, private=private, exists_ok=True,
                                description=f"Pruned, quantized and distilled variants of one classifier of {data_name}, "
                                            "measured on CPU."[:150])
    for name, repo_id in repos.items():
        note = "⭐ recommended: best accuracy/latency/size trade-off" if name == recommended else None
        api.add_collection_item(col.slug, item_id=repo_id, item_type="model", note=note, exists_ok=True)
    return col.slug


# What the Space runs: the app and the serving side of the package, nothing that imports torch.
SERVING_MODULES = ("__init__.py", "errors.py", "machine.py", "config.py", "data.py", "modeling.py", "runtime.py", "metrics.py",
                   "artifacts.py", "progress.py", "report.py", "serving.py")


def stage_space(stage: Path, repo_ids: list[str]) -> None:
    """Write the Space's files into ``stage``: app.py, the serving modules, the lean requirements, README."""
    import yaml

    shutil.copy(REPO_ROOT / "app.py", stage / "app.py")
    shutil.copy(REPO_ROOT / "space_config" / "requirements.txt", stage / "requirements.txt")
    (stage / "compression").mkdir()
    for module in SERVING_MODULES:
        shutil.copy(REPO_ROOT / "compression" / module, stage / "compression" / module)
    (stage / "space_config").mkdir()
    text = (REPO_ROOT / "space_config" / "README.md").read_text()
    _, header, body = text.split("---", 2)
    meta = yaml.safe_load(header)
    meta["models"] = list(repo_ids)
    (stage / "README.md").write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---" + body)
    (stage / "space_config" / "hub_repos.txt").write_text("\n".join(repo_ids) + "\n")


def publish_space(namespace: str, repo_ids: list[str], name: str = "bert-compression-studio", private: bool = False,
                  token: str | None = None, attempts: int = 4, retry_delay: float = 1.0) -> str:
    """Create/update a Gradio Space: app.py, the serving modules, serving-only requirements, the README card.

    Errors are handled as ``publish`` handles them: 429, 5xx and dropped connections are retried with
    back-off; 401/403 and what is still failing after the retries end as one line (never the token)."""
    from huggingface_hub import HfApi

    if not repo_ids:
        raise PublishError("no published variant repos given: publish the variants first")
    api = HfApi(token=token)
    space_id = f"{namespace}/{name}"
    with tempfile.TemporaryDirectory() as staging:
        stage = Path(staging)
        stage_space(stage, repo_ids)
        try:
            _retry(lambda: api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True),
                   f"create {space_id}", attempts, retry_delay)
            _retry(lambda: api.upload_folder(repo_id=space_id, repo_type="space", folder_path=stage,
                                             commit_message="Deploy the studio app"), f"upload {space_id}", attempts, retry_delay)
        except AuthError as exc:
            raise AuthError(f"token lacks write access to {namespace} (HTTP {exc}); the Space {space_id} was not deployed") from None
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            what = f"HTTP {status}" if status else type(exc).__name__
            raise PublishError(f"Space deploy to {space_id} failed after {attempts} attempts ({what}); "
                               "the variant repos are unchanged, run publish-space again") from None
    return space_id
