"""BERT Compression Studio: compare every compressed variant live through ONNX Runtime.

Local:  python app.py            (builds recipes/demo.yaml first when variants/ is empty)
Space:  the app reads space_config/hub_repos.txt (written by publish-space) and downloads them

Environment: BCS_VARIANTS_DIR (default variants), BCS_HUB_REPOS (comma-separated repo
ids; when set, variants are downloaded from the Hub instead), BCS_THREADS (intra-op
threads per variant session, default 1: requests run variants side by side instead).

Imports only the serving side of the package (no torch): the Space installs
onnxruntime, tokenizers, huggingface_hub, gradio and pandas.
"""
from __future__ import annotations

import html
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import gradio as gr
import pandas as pd

from compression import serving

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
# Gradio's queue rebuilds a pandas summary of *every* event so far after each request (O(n) per
# request, 7% of the server's CPU under the 50-caller load test): every 1,000 events is plenty.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
# gradio 6.17 touches a deprecated Starlette constant on every queued request: one log line each
warnings.filterwarnings("ignore", message=".*HTTP_422_UNPROCESSABLE_ENTITY.*")
VARIANTS_DIR = Path(os.environ.get("BCS_VARIANTS_DIR", "variants"))
DEMO_RECIPE = "recipes/demo.yaml"
_REPOS_FILE = Path(__file__).with_name("space_config") / "hub_repos.txt"
HUB_REPOS = [r.strip() for r in os.environ.get("BCS_HUB_REPOS", "").split(",") if r.strip()] or (
    [r.strip() for r in _REPOS_FILE.read_text().splitlines() if r.strip()] if _REPOS_FILE.is_file() else []
)
EXAMPLES = [
    "not bad at all",
    "a gripping , beautifully acted film .",
    "i did n't expect to hate it this much .",
    "it 's not that it 's boring , it 's just not good .",
    "@united two hours on the tarmac and no update . thanks a lot",
    "🎬 absolutely loved it ❤️",
]
CLASSIFY_HEADERS = ["variant", "label", "confidence", "latency_ms", "build_p50_ms", "size_mb", "accuracy", "ood_accuracy", "agrees"]
COMPARE_COLUMNS = ["variant", "accuracy", "ood_accuracy", "ood_balanced_accuracy", "latency_p50_ms", "latency_p95_ms", "size_mb",
                   "params", "sparsity", "agreement", "pareto", "recommended", "hub"]


def ensure_variants() -> None:
    """First run: build the demo recipe so the app has something to show (progress lines with an ETA)."""
    if HUB_REPOS or (VARIANTS_DIR.is_dir() and any(VARIANTS_DIR.glob("*/model.onnx"))):
        return
    print(f"No variants in {VARIANTS_DIR}/ yet: building {DEMO_RECIPE} (about 10 minutes on 2 CPU cores)...", flush=True)
    subprocess.run([sys.executable, "-m", "compression", "build", "--recipe", DEMO_RECIPE, "--variants-dir", str(VARIANTS_DIR)],
                   check=True)


if __name__ == "__main__":
    ensure_variants()

FAMILY = serving.load_family(None if HUB_REPOS else VARIANTS_DIR, HUB_REPOS or None, int(os.environ.get("BCS_THREADS", 1)))


def status_lines(notes: list[str]) -> str:
    return "\n".join(f"- {html.escape(n, quote=False)}" for n in notes)


def page_address(request: gr.Request | None) -> str:
    """This page's own address (scheme, host, path; no query), from the request that asked."""
    if request is None:
        return ""
    referer = request.headers.get("referer") if getattr(request, "headers", None) else None
    if referer:
        parts = urlsplit(referer)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    url = getattr(request, "url", None)
    return f"{url.scheme}://{url.netloc}/" if url is not None else ""


def share_link(text: str, variant: str | None, base: str = "") -> str:
    params = {"text": text[:500]}
    if variant:
        params["variant"] = variant
    return f"{base}?{urlencode(params)}"


def _mark(name: str, highlight: str | None) -> str:
    return f"▶ {name}" if name == highlight else name


def classify(text: str, highlight: str | None = None, request: gr.Request = None):
    """Classify ``text`` with every variant: (table, notes, latency chart, size chart, link)."""
    rows, notes = serving.predict(FAMILY, text)
    highlight = highlight if highlight in FAMILY.variants else None
    df = pd.DataFrame(rows, columns=CLASSIFY_HEADERS)
    if any(r["agrees"] != "✓" for r in rows):
        notes.append(f"Some variants disagree with the {FAMILY.reference} reference (rows marked ✗).")
    chart = pd.DataFrame({"variant": [r["variant"] for r in rows], "latency_ms": [r["latency_ms"] for r in rows],
                          "size_mb": [r["size_mb"] for r in rows],
                          "shown": ["highlighted" if r["variant"] == highlight else "variant" for r in rows]})
    df["variant"] = [_mark(n, highlight) for n in df["variant"]]
    link = share_link(serving.clean_text(text)[0], highlight, page_address(request)) if rows else ""
    return df, status_lines(notes), chart, chart, link


def on_load(request: gr.Request):
    """``?variant=NAME&text=...`` preselects a variant and fills the text box."""
    params = dict(request.query_params) if request is not None else {}
    text = params.get("text", "")
    variant = params.get("variant")
    notes = []
    if variant and variant not in FAMILY.variants:
        notes.append(f"Unknown variant {variant!r} in the link; available: {', '.join(FAMILY.names) or 'none'}.")
        variant = None
    return text, gr.update(value=variant), status_lines(notes)


def compare_table(highlight: str | None = None) -> pd.DataFrame:
    """One row per measured variant, from each variant's metrics.json (local folder or Hub repo)."""
    digits = {"accuracy": 4, "ood_accuracy": 4, "ood_balanced_accuracy": 4, "agreement": 4, "latency_p50_ms": 2,
              "latency_p95_ms": 2, "size_mb": 2, "sparsity": 3}
    rows = []
    for r in FAMILY.rows:
        row = {c: (round(r[c], digits[c]) if c in digits and r.get(c) is not None else r.get(c)) for c in COMPARE_COLUMNS}
        name = r["variant"]
        shown = f"⭐ {name}" if name == FAMILY.recommended else name
        row["variant"] = f"▶ {shown}" if name == highlight else shown
        row["pareto"], row["recommended"] = name in FAMILY.pareto, name == FAMILY.recommended
        repo = r.get("hub_repo")
        row["hub"] = f"[{repo}](https://huggingface.co/{repo})" if repo else ""
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def pareto_points() -> pd.DataFrame:
    """Accuracy vs p50 latency for the native plot; hover shows the numbers, colour the role."""
    role = lambda n: "recommended" if n == FAMILY.recommended else ("Pareto front" if n in FAMILY.pareto else "other")  # noqa: E731
    return pd.DataFrame([{"variant": r["variant"], "accuracy": round(r["accuracy"] * 100, 2),
                          "latency_p50_ms": round(r["latency_p50_ms"], 2), "size_mb": round(r["size_mb"], 2),
                          "ood_balanced_accuracy": round(r.get("ood_balanced_accuracy", float("nan")) * 100, 2),
                          "role": role(r["variant"])} for r in FAMILY.rows],
                        columns=["variant", "accuracy", "latency_p50_ms", "size_mb", "ood_balanced_accuracy", "role"])


def heatmap_html(matrix: list[list], names: list[str]) -> str:
    """The agreement matrix as a coloured table (no plotting library needed on the Space)."""
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for row in matrix:
        cells = "".join(f'<td style="background:rgba(214,39,40,{(1 - v) * 4:.2f});text-align:right">{v:.3f}</td>'
                        for v in row[1:])
        body.append(f"<tr><th>{html.escape(row[0])}</th>{cells}</tr>")
    return (f'<table id="agreement-heatmap"><tr><th></th>{head}</tr>{"".join(body)}</table>'
            "<small>Share of sentences on which two variants give the same label; redder = more disagreement.</small>")


def batch(text: str, file, progress=gr.Progress()):
    """Batch tab: (per-variant table, agreement heatmap, flipped sentences, notes)."""
    try:
        texts, labels, notes = serving.parse_batch(text, file if isinstance(file, str) or file is None else file.name)
    except ValueError as exc:
        return pd.DataFrame(), "", pd.DataFrame(), status_lines([str(exc)])
    rows, matrix, names, flips = serving.run_batch(FAMILY, texts, labels, progress)
    if labels is None:
        notes.append("No label column: accuracy is not shown, agreement is.")
    notes.append(f"{len(flips)} of {len(texts)} sentences get a different label from {FAMILY.reference} in some variant.")
    return pd.DataFrame(rows), heatmap_html(matrix, names), pd.DataFrame(flips), status_lines(notes)


def not_served_md() -> str:
    lines = [f"- `{html.escape(n)}`: {html.escape(r)}" for n, r in FAMILY.references.items()]
    lines += [f"- `{html.escape(n)}`: unavailable — {html.escape(r)}" for n, r in FAMILY.unavailable.items()]
    return ("**Not served here**\n" + "\n".join(lines)) if lines else ""


with gr.Blocks(title="BERT Compression Studio") as demo:
    gr.Markdown(
        "# BERT Compression Studio\nOne fine-tuned MiniLM sentiment classifier, many compressed variants, "
        f"all running on ONNX Runtime on this CPU. {len(FAMILY.variants)} variants loaded"
        + (f"; recommended: **{FAMILY.recommended}**." if FAMILY.recommended else ".")
    )
    gr.Markdown(not_served_md())
    with gr.Tab("Classify"):
        with gr.Row():
            text_in = gr.Textbox(label="Sentence", lines=2, placeholder="Type a sentence…", scale=4)
            highlight = gr.Dropdown(choices=FAMILY.names, value=None, label="Highlight variant", scale=1)
        go = gr.Button("Classify", variant="primary")
        notes_md = gr.Markdown()
        table = gr.Dataframe(headers=CLASSIFY_HEADERS, label="Predictions per variant (accuracy = SST-2 validation, "
                             "ood_accuracy = balanced accuracy on airline tweets; latency_ms = this request, "
                             "build_p50_ms = the build's steady measurement)", interactive=False, elem_id="predictions")
        with gr.Row():
            lat_plot = gr.BarPlot(x="variant", y="latency_ms", color="shown", title="Model latency for this text (ms)",
                                  y_lim=[0, None], x_label_angle=-40, color_map={"variant": "#4c78a8", "highlighted": "#e45756"})
            size_plot = gr.BarPlot(x="variant", y="size_mb", color="shown", title="Size on disk (MB)", y_lim=[0, None],
                                   x_label_angle=-40, color_map={"variant": "#4c78a8", "highlighted": "#e45756"})
        link = gr.Textbox(label="Shareable link", buttons=["copy"], interactive=False, elem_id="share-link")
        gr.Examples(EXAMPLES, inputs=text_in)
        outputs = [table, notes_md, lat_plot, size_plot, link]
        go.click(classify, [text_in, highlight], outputs, api_name="classify")
        text_in.submit(classify, [text_in, highlight], outputs, api_name=False)
    with gr.Tab("Compare"):
        gr.Markdown("Every variant as measured by the build (SST-2 validation accuracy; out-of-domain airline tweets; "
                    "batch-1 latency on the build machine). ⭐ = recommended. Click a header to sort.")
        compare_df = gr.Dataframe(compare_table(), datatype="markdown", interactive=False, elem_id="compare-table")
        gr.ScatterPlot(pareto_points(), x="latency_p50_ms", y="accuracy", color="role", elem_id="pareto-plot",
                       tooltip=["variant", "accuracy", "latency_p50_ms", "size_mb", "ood_balanced_accuracy"],
                       title="Accuracy (%) vs batch-1 latency (ms): hover a point",
                       color_map={"recommended": "#e45756", "Pareto front": "#4c78a8", "other": "#bab0ac"})
    with gr.Tab("Batch"):
        gr.Markdown(f"Paste one sentence per line, or upload a CSV/TSV with a `sentence` (or `text`) column and an "
                    f"optional `label` column. At most {serving.MAX_BATCH_ROWS} rows.")
        batch_text = gr.Textbox(lines=6, label="Sentences")
        batch_file = gr.File(label="CSV/TSV", file_types=[".csv", ".tsv", ".txt"], type="filepath")
        batch_go = gr.Button("Run batch")
        batch_notes = gr.Markdown()
        batch_table = gr.Dataframe(label="Per variant", interactive=False)
        batch_heatmap = gr.HTML(label="Agreement between variants")
        batch_flips = gr.Dataframe(label="Sentences whose label differs from the reference", interactive=False, elem_id="flips")
        batch_go.click(batch, [batch_text, batch_file], [batch_table, batch_heatmap, batch_flips, batch_notes], api_name="batch")
    highlight.change(compare_table, highlight, compare_df, api_name=False)
    demo.load(on_load, None, [text_in, highlight, notes_md], api_name=False)


if __name__ == "__main__":
    # status_update_rate=5: queue positions every 5 s, not a message to every waiting client
    # each time any request finishes (the "auto" default: O(queue length) writes per request)
    demo.queue(status_update_rate=5, default_concurrency_limit=8, max_size=512).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=int(os.environ.get("PORT", 7860))
    )
