"""BERT Compression Studio: compare every compressed variant live through ONNX Runtime.

Local:  python app.py            (builds the quick recipe first when variants/ is empty)
Space:  BCS_HUB_REPOS=ns/minilm-sst2-fp32,ns/minilm-sst2-int8-dynamic python app.py

Environment: BCS_VARIANTS_DIR (default variants), BCS_HUB_REPOS (comma-separated
repo ids; when set, variants are downloaded from the Hub instead), BCS_THREADS.
"""
from __future__ import annotations

import html
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import gradio as gr
import pandas as pd

from compression import serving

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
VARIANTS_DIR = Path(os.environ.get("BCS_VARIANTS_DIR", "variants"))
# On the Space, publish-space writes space_config/hub_repos.txt; BCS_HUB_REPOS overrides it.
_REPOS_FILE = Path(__file__).with_name("space_config") / "hub_repos.txt"
HUB_REPOS = [r.strip() for r in os.environ.get("BCS_HUB_REPOS", "").split(",") if r.strip()] or (
    [r.strip() for r in _REPOS_FILE.read_text().splitlines() if r.strip()] if _REPOS_FILE.is_file() else []
)
EXAMPLES = [
    "a gripping , beautifully acted film .",
    "not bad at all , actually .",
    "i did n't expect to hate it this much .",
    "it 's not that it 's boring , it 's just not good .",
    "the plot is thin but the performances are anything but .",
    "🎬 absolutely loved it ❤️",
]
CLASSIFY_HEADERS = ["variant", "label", "confidence", "latency_ms", "size_mb", "agrees"]


def ensure_variants() -> None:
    """First run: build the quick recipe so the demo has something to show."""
    if HUB_REPOS or (VARIANTS_DIR.is_dir() and any(VARIANTS_DIR.glob("*/model.onnx"))):
        return
    print(f"No variants in {VARIANTS_DIR}/ yet: building recipes/quick.yaml (about 10 minutes on 2 CPU cores)...")
    subprocess.run([sys.executable, "-m", "compression", "build", "--recipe", "recipes/quick.yaml", "--out", str(VARIANTS_DIR)], check=True)


if __name__ == "__main__":
    ensure_variants()

STUDIO = serving.load_studio(None if HUB_REPOS else VARIANTS_DIR, HUB_REPOS or None, int(os.environ.get("BCS_THREADS", 0)) or None)


def status_lines(notes: list[str]) -> str:
    return "\n".join(f"- {html.escape(n, quote=False)}" for n in notes)


def share_link(text: str, variant: str | None) -> str:
    params = {"text": text[:500]}
    if variant:
        params["variant"] = variant
    return "?" + urlencode(params)


def classify(text: str, highlight: str | None = None):
    """Classify ``text`` with every variant: (table, notes, latency chart, size chart, link)."""
    rows, notes = serving.predict(STUDIO, text)
    df = pd.DataFrame(rows, columns=CLASSIFY_HEADERS)
    if highlight and highlight in STUDIO.variants:
        df["variant"] = [f"▶ {n}" if n == highlight else n for n in df["variant"]]
    if any(r["agrees"] != "✓" for r in rows):
        notes.append("Some variants disagree with the fp32 reference (rows marked ✗).")
    lat = df[["variant", "latency_ms"]] if rows else pd.DataFrame({"variant": [], "latency_ms": []})
    size = df[["variant", "size_mb"]] if rows else pd.DataFrame({"variant": [], "size_mb": []})
    link = share_link(serving.clean_text(text)[0], highlight) if rows else ""
    return df, status_lines(notes), lat, size, link


def on_load(request: gr.Request):
    """``?variant=NAME&text=...`` preselects a variant and fills the text box."""
    params = dict(request.query_params) if request is not None else {}
    text = params.get("text", "")
    variant = params.get("variant")
    notes = []
    if variant and variant not in STUDIO.variants:
        notes.append(f"Unknown variant {variant!r} in the link; available: {', '.join(STUDIO.names) or 'none'}.")
        variant = None
    return text, gr.update(value=variant), status_lines(notes)


def compare_table() -> pd.DataFrame:
    cols = ["variant", "accuracy", "latency_p50_ms", "latency_p95_ms", "size_mb", "params", "sparsity", "agreement", "pareto", "recommended", "hub"]
    digits = {"accuracy": 4, "agreement": 4, "latency_p50_ms": 2, "latency_p95_ms": 2, "size_mb": 2, "sparsity": 3}
    rows = []
    for r in STUDIO.report_rows:
        repo = (STUDIO.variants[r["variant"]].hub_repo if r["variant"] in STUDIO.variants else None) or r.get("hub_repo")
        row = {c: (round(r[c], digits[c]) if c in digits and r.get(c) is not None else r.get(c)) for c in cols}
        row["variant"] = f"⭐ {r['variant']}" if r.get("recommended") else r["variant"]
        row["hub"] = f"[{repo}](https://huggingface.co/{repo})" if repo else ""
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def batch(text: str, file, progress=gr.Progress()):
    """Batch tab: (per-variant table, agreement matrix, notes)."""
    try:
        texts, labels, notes = serving.parse_batch(text, file if isinstance(file, str) or file is None else file.name)
    except ValueError as exc:
        return pd.DataFrame(), pd.DataFrame(), status_lines([str(exc)])
    rows, matrix, names = serving.run_batch(STUDIO, texts, labels, progress)
    if labels is None:
        notes.append("No label column: accuracy is not shown, agreement is.")
    return pd.DataFrame(rows), pd.DataFrame(matrix, columns=["variant"] + names), status_lines(notes)


def unavailable_md() -> str:
    if not STUDIO.unavailable:
        return ""
    return "**Unavailable variants**\n" + "\n".join(f"- `{html.escape(n)}`: {html.escape(r)}" for n, r in STUDIO.unavailable.items())


with gr.Blocks(title="BERT Compression Studio") as demo:
    gr.Markdown(
        "# BERT Compression Studio\nOne fine-tuned MiniLM sentiment classifier, many compressed variants, "
        f"all running on ONNX Runtime on this CPU. {len(STUDIO.variants)} variants loaded."
    )
    gr.Markdown(unavailable_md())
    with gr.Tab("Classify"):
        with gr.Row():
            text_in = gr.Textbox(label="Sentence", lines=2, placeholder="Type a sentence…", scale=4)
            highlight = gr.Dropdown(choices=STUDIO.names, value=None, label="Highlight variant", scale=1)
        go = gr.Button("Classify", variant="primary")
        notes_md = gr.Markdown()
        table = gr.Dataframe(headers=CLASSIFY_HEADERS, label="Predictions per variant", interactive=False, elem_id="predictions")
        with gr.Row():
            lat_plot = gr.BarPlot(x="variant", y="latency_ms", title="Latency for this text (ms, median of 5)", y_lim=[0, None], x_label_angle=-40)
            size_plot = gr.BarPlot(x="variant", y="size_mb", title="Size on disk (MB)", y_lim=[0, None], x_label_angle=-40)
        link = gr.Textbox(label="Shareable link (append to this page's address)", buttons=["copy"], interactive=False)
        gr.Examples(EXAMPLES, inputs=text_in)
        outputs = [table, notes_md, lat_plot, size_plot, link]
        go.click(classify, [text_in, highlight], outputs, api_name="classify")
        text_in.submit(classify, [text_in, highlight], outputs, api_name=False)
    with gr.Tab("Compare"):
        gr.Markdown("Evaluation report (SST-2 validation, batch-1 latency on the build machine). Click a header to sort.")
        gr.Dataframe(compare_table(), datatype="markdown", interactive=False)
        if STUDIO.pareto_png:
            gr.Image(str(STUDIO.pareto_png), label="Accuracy vs latency (red: recommended)", show_label=True)
    with gr.Tab("Batch"):
        gr.Markdown(f"Paste one sentence per line, or upload a CSV/TSV with a `sentence` (or `text`) column and an optional `label` column. At most {serving.MAX_BATCH_ROWS} rows.")
        batch_text = gr.Textbox(lines=6, label="Sentences")
        batch_file = gr.File(label="CSV/TSV", file_types=[".csv", ".tsv", ".txt"], type="filepath")
        batch_go = gr.Button("Run batch")
        batch_notes = gr.Markdown()
        batch_table = gr.Dataframe(label="Per variant", interactive=False)
        batch_matrix = gr.Dataframe(label="Agreement between variants", interactive=False)
        batch_go.click(batch, [batch_text, batch_file], [batch_table, batch_matrix, batch_notes], api_name="batch")
    demo.load(on_load, None, [text_in, highlight, notes_md], api_name=False)


if __name__ == "__main__":
    demo.queue(default_concurrency_limit=4, max_size=256).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=int(os.environ.get("PORT", 7860))
    )
