"""BERT Compression Studio: compare every compressed variant live through ONNX Runtime.

Local:  python app.py            (serves at once; on an empty variants/ it builds recipes/demo.yaml
                                  in a separate process and the page fills in as variants finish)
Space:  the app reads space_config/hub_repos.txt (written by publish-space) and downloads them

Environment: BCS_VARIANTS_DIR (default variants), BCS_RECIPE (what a first run builds, default
recipes/demo.yaml), BCS_BUILD=0 (never start a build), BCS_HUB_REPOS (comma-separated repo ids;
when set, variants are downloaded from the Hub instead), BCS_THREADS (intra-op threads per
variant session, default 1: each variant is timed alone on one thread, as the build measures it).

Imports only the serving side of the package (no torch): the Space installs onnxruntime,
tokenizers, huggingface_hub, gradio and pandas. The build runs as its own process (never inside
a request) and writes progress.json; the page polls that file and the folder.
"""
from __future__ import annotations

import atexit
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

from compression import artifacts, progress, serving
from compression.report import delta_text

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
# Gradio's queue rebuilds a pandas summary of *every* event so far after each request (O(n) per
# request, 7% of the server's CPU under the 50-caller load test): every 1,000 events is plenty.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
# gradio 6.17 touches a deprecated Starlette constant on every queued request: one log line each
warnings.filterwarnings("ignore", message=".*HTTP_422_UNPROCESSABLE_ENTITY.*")
VARIANTS_DIR = Path(os.environ.get("BCS_VARIANTS_DIR", "variants"))
RECIPE = os.environ.get("BCS_RECIPE", str(Path(__file__).with_name("recipes") / "demo.yaml"))
POLL_S = 2.0  # how often an open page looks at the build folder while a build runs
# Row marks from plain text fonts (DejaVu Sans has both), not emoji: in a browser without an emoji font
# (headless Chromium on Debian, minimal desktops) ⭐ and ⏳ were empty boxes.
STAR = "★"  # the recommended variant
WAIT = "◌"  # a planned variant not built yet
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
CLASSIFY_HEADERS = ["variant", "label", "confidence", "live_ms", "build_p50_ms", "latency_ms", "size_mb", "accuracy",
                    "ood_accuracy", "agrees"]
COMPARE_COLUMNS = ["variant", "accuracy", "delta_vs_teacher", "flips", "ood_accuracy", "ood_balanced_accuracy",
                   "latency_p50_ms", "latency_p95_ms", "size_mb", "params", "sparsity", "agreement", "pareto",
                   "recommended", "hub"]
_BUILD: subprocess.Popen | None = None


def start_build() -> str | None:
    """Start the recipe's build as its own process when the folder is not a finished build and no
    other process is building it; returns a line for the terminal (None: nothing to do)."""
    global _BUILD
    if HUB_REPOS or os.environ.get("BCS_BUILD", "1") == "0":
        return None
    VARIANTS_DIR.mkdir(parents=True, exist_ok=True)
    fd = progress.claim(VARIANTS_DIR)  # taken before the build process exists: two apps cannot both build
    if fd is None:
        pid = progress.holder(VARIANTS_DIR)
        return f"Another process ({pid}) is building {VARIANTS_DIR}/: this app serves it and follows its progress."
    try:
        state = (artifacts.read_json(VARIANTS_DIR / artifacts.PROGRESS) or {}).get("state")
        if (VARIANTS_DIR / artifacts.REPORT).is_file() and state in (None, "done"):
            return None  # a finished build
        log_path = VARIANTS_DIR / "build.log"
        with open(log_path, "ab") as log_file:  # the build inherits the locked descriptor and keeps the lock
            _BUILD = subprocess.Popen([sys.executable, "-m", "compression", "build", "--recipe", str(Path(RECIPE).resolve()),
                                       "--variants-dir", str(VARIANTS_DIR.resolve())], stdout=log_file,
                                      stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent, pass_fds=(fd,),
                                      env={**os.environ, progress.LOCK_FD_ENV: str(fd)})
    finally:
        os.close(fd)  # the app's copy; the lock lives on in the build process
    atexit.register(_stop_build)
    verb = "Resuming" if state else "Building"
    return (f"{verb} {RECIPE} into {VARIANTS_DIR}/ in the background (process {_BUILD.pid}, log {log_path}); "
            "the page shows each variant as it finishes.")


def _stop_build() -> None:
    """The app started the build, so the app's exit stops it; the next `python app.py` resumes it."""
    if _BUILD is not None and _BUILD.poll() is None:
        _BUILD.terminate()
        try:
            _BUILD.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _BUILD.kill()


if __name__ == "__main__":
    line = start_build()
    if line:
        print(line, flush=True)

FAMILY = serving.load_family(None if HUB_REPOS else VARIANTS_DIR, HUB_REPOS or None, int(os.environ.get("BCS_THREADS", 1)))
serving.start_warm_timer(FAMILY, EXAMPLES[:3])  # live_ms: each variant timed warm, alone, between requests


def status_lines(notes: list[str]) -> str:
    return "\n".join(f"- {html.escape(n, quote=False)}" for n in notes)


def build_state() -> dict | None:
    return None if HUB_REPOS else progress.read(VARIANTS_DIR)


def building_names() -> list[str]:
    """Variants the build has still to finish (empty when no build is running)."""
    state = build_state()
    return list(state.get("pending") or []) if state and state.get("state") == "running" else []


def _minutes(seconds) -> str:
    return "estimating…" if seconds is None else f"about {seconds / 60:.1f} min left" if seconds >= 60 else f"about {seconds:.0f} s left"


def build_status_html() -> str:
    """The build panel: state, current stage, a progress bar with the estimate, or the error."""
    state = build_state()
    if not state:
        return ""
    done, total = state.get("stages_done", 0), max(state.get("stages_total", 1), 1)
    steps = ""
    if state.get("steps_total"):
        steps = f" — step {state['steps_done']:,} of {state['steps_total']:,}"
    share = done / total
    if state.get("steps_total"):
        share += (state["steps_done"] / state["steps_total"]) / total
    if state["state"] == "done":
        return (f'<div id="build-status" class="done">Build finished: {done} of {total} stages '
                f'in {state.get("elapsed_s", 0) / 60:.1f} min.</div>')
    if state["state"] == "failed":
        return (f'<div id="build-status" class="failed"><b>The build stopped with an error</b> while '
                f'{html.escape(str(state.get("stage")))}: <code>{html.escape(str(state.get("error")))}</code><br>'
                f"Finished variants are still served. Fix the cause and restart <code>python app.py</code> to resume "
                f"(log: {html.escape(str(VARIANTS_DIR / 'build.log'))}).</div>")
    if state["state"] == "stopped":
        return (f'<div id="build-status" class="failed"><b>The build stopped</b> (its process is gone) during '
                f"{html.escape(str(state.get('stage')))}; {done} of {total} stages are finished and served. "
                "Restart <code>python app.py</code> to resume it.</div>")
    pending = ", ".join(state.get("pending") or []) or "none"
    return (f'<div id="build-status" class="running"><b>Building</b> ({done} of {total} stages done): '
            f'<span id="build-stage">{html.escape(str(state.get("stage")))}</span>{steps}, '
            f'{_minutes(state.get("eta_s"))}.<br><progress id="build-bar" max="1" value="{share:.3f}" style="width:100%">'
            f"</progress><small>Still to come: {html.escape(pending)}. Rows appear below as each variant finishes.</small></div>")


def header_md() -> str:
    data = FAMILY.data or {}
    on = f" on {data['name']}" if data.get("name") else ""
    return (f"# BERT Compression Studio\nOne fine-tuned classifier{on}, many compressed variants, all running on "
            f"ONNX Runtime on this CPU. {len(FAMILY.variants)} variants loaded"
            + (f"; recommended: **{FAMILY.recommended}**." if FAMILY.recommended else "."))


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
    shown = f"{STAR} {name}" if name == FAMILY.recommended else name
    return f"▶ {shown}" if name == highlight else shown


def answer_order(rows: list[dict]) -> list[dict]:
    """The reference's answer first, the recommended variant's next, then the rest as loaded: the two
    answers a user compares are on top, not wherever the name sorts (in a 27-row family, row 24)."""
    rank = {FAMILY.reference: 0, FAMILY.recommended: 1}
    return sorted(rows, key=lambda r: rank.get(r["variant"], 2))


def empty_table() -> pd.DataFrame:
    """Shown before an answer whose row count may differ from the last one (see planned_rows)."""
    return pd.DataFrame()


def classify(text: str, highlight: str | None = None, request: gr.Request = None):
    """Classify ``text`` with every variant: (table, notes, latency chart, size chart, link)."""
    rows, notes = serving.predict(FAMILY, text)
    rows = answer_order(rows)
    highlight = highlight if highlight in FAMILY.variants else None
    df = pd.DataFrame(rows, columns=CLASSIFY_HEADERS)
    if any(r["agrees"] != "✓" for r in rows):
        notes.append(f"Some variants disagree with the {FAMILY.reference} reference (rows marked ✗).")
    pending = [n for n in building_names() if n not in FAMILY.variants]
    if pending:
        notes.append(f"Still building: {', '.join(pending)} (they answer here as soon as they are finished).")
    if not FAMILY.variants and FAMILY.unavailable:
        notes.append("No variant could be loaded: " + "; ".join(f"{n}: {r}" for n, r in FAMILY.unavailable.items()))
    chart = pd.DataFrame({"variant": [r["variant"] for r in rows], "live_ms": [r["live_ms"] for r in rows],
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
    pending = building_names()
    if variant and variant not in FAMILY.variants:
        if variant in pending:
            notes.append(f"{variant!r} is still being built; it will be selectable once it is finished.")
        else:
            notes.append(f"Unknown variant {variant!r} in the link; available: {', '.join(FAMILY.names) or 'none'}.")
        variant = None
    return text, gr.update(value=variant, choices=FAMILY.names), status_lines(notes)


def planned_rows() -> list[dict]:
    """A placeholder row for every variant of the build's plan that is not served yet, saying why.

    While a build runs the compare table thus keeps one row per planned variant from the start and
    each row fills in place when its folder is finished. Besides showing what is coming, a constant
    row count sidesteps a Gradio 6.17 Dataframe bug (gradio-app/gradio#13611, fixed in 6.18, which
    needs huggingface_hub 1.x): after the first non-empty value, a value with a different number of
    rows is not drawn until the table is clicked."""
    state = build_state()
    if not state or not state.get("names"):
        return []
    skipped = state.get("skipped") or {}
    running = state.get("state") == "running"
    rows = []
    for name in [artifacts.TEACHER, *state["names"]]:
        if name in FAMILY.variants or any(r["variant"] == name for r in FAMILY.rows):
            continue
        why = (f"skipped: {skipped[name]}" if name in skipped else "building…" if running
               else "not built (the build stopped before it)")
        rows.append({"variant": name, "planned": why})
    return rows


def compare_table(highlight: str | None = None) -> pd.DataFrame:
    """One row per measured variant, from each variant's metrics.json (local folder or Hub repo)."""
    digits = {"accuracy": 4, "ood_accuracy": 4, "ood_balanced_accuracy": 4, "agreement": 4, "latency_p50_ms": 2,
              "latency_p95_ms": 2, "size_mb": 2, "sparsity": 3}
    rows = []
    for r in FAMILY.rows + planned_rows():
        if r.get("planned"):
            rows.append({"variant": f"{WAIT} {r['variant']}", "delta_vs_teacher": r["planned"]})
            continue
        row = {c: (round(r[c], digits[c]) if c in digits and r.get(c) is not None else r.get(c)) for c in COMPARE_COLUMNS}
        name = r["variant"]
        row["variant"] = _mark(name, highlight) + (" ↓" if r.get("significantly_worse") else "")
        row["delta_vs_teacher"] = delta_text(r)
        row["flips"] = "" if r.get("flips_lost") is None else f"{r['flips_lost']} / {r['flips_gained']}"
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
                          "delta_vs_teacher": delta_text(r),
                          "ood_balanced_accuracy": round(r.get("ood_balanced_accuracy", float("nan")) * 100, 2),
                          "role": role(r["variant"])} for r in FAMILY.rows],
                        columns=["variant", "accuracy", "latency_p50_ms", "size_mb", "delta_vs_teacher", "ood_balanced_accuracy",
                                 "role"])


def accuracy_range(points: pd.DataFrame, pad: float = 0.3) -> list[float] | None:
    """The plot's accuracy axis: every point inside with ``pad`` points to spare (the plot's own fit
    puts the best variants on the top edge, half cut off); None while no row exists."""
    if points.empty:
        return None
    return [float(points["accuracy"].min()) - pad, float(points["accuracy"].max()) + pad]


def pareto_plot_update():
    points = pareto_points()
    return gr.update(value=points, y_lim=accuracy_range(points))


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
    if not FAMILY.variants:
        return pd.DataFrame(), "", pd.DataFrame(), status_lines(["No variant is ready to answer yet."])
    rows, matrix, names, flips = serving.run_batch(FAMILY, texts, labels, progress)
    if labels is None:
        notes.append("No label column: accuracy is not shown, agreement is.")
    notes.append(f"{len(flips)} of {len(texts)} sentences get a different label from {FAMILY.reference} in some variant.")
    return pd.DataFrame(rows), heatmap_html(matrix, names), pd.DataFrame(flips), status_lines(notes)


def not_served_md() -> str:
    lines = [f"- `{html.escape(n)}`: {html.escape(r)}" for n, r in FAMILY.references.items()]
    lines += [f"- `{html.escape(n)}`: unavailable — {html.escape(r)}" for n, r in FAMILY.unavailable.items()]
    return ("**Not served here**\n" + "\n".join(lines)) if lines else ""


def empty_note() -> str:
    if FAMILY.variants or FAMILY.rows or build_state():
        return ""
    where = ", ".join(HUB_REPOS) if HUB_REPOS else f"{VARIANTS_DIR}/"
    return (f"**No variants to serve** in {html.escape(where)}. Build some with `python -m compression build "
            f"--recipe recipes/demo.yaml --variants-dir {html.escape(str(VARIANTS_DIR))}`, or start `python app.py` "
            "without BCS_BUILD=0 to build them here.")


def refresh_page(highlight: str | None, shown: int):
    """One poll: the build panel always; the tables, plot and choices when this page shows an older
    version of the family than the server holds. Per page, not per server: every open page (and one
    opened after a change, whose initial values date from the app's start) catches up on its next poll."""
    serving.refresh(FAMILY)
    status = build_status_html()
    version = FAMILY.version
    if shown == version:
        return status, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), shown
    return (status, header_md(), not_served_md() or empty_note(), compare_table(highlight), pareto_plot_update(),
            gr.update(choices=FAMILY.names), gr.update(label=data_label()), version)


def data_label() -> str:
    data = FAMILY.data or {}
    ood = f", ood_accuracy = balanced accuracy on {data['ood_name']}" if data.get("ood_name") else ""
    return (f"Predictions per variant (accuracy = {data.get('name') or 'evaluation data'} {data.get('split') or ''}{ood}; "
            f"live_ms = this server now: median of the variant's last {serving.LIVE_WINDOW} warm timed runs, each "
            f"timed alone on 1 thread, {serving.WARM_RUNS} runs back to back on the latest sentences, between requests; "
            "build_p50_ms = the build's steady batch-1 p50; latency_ms = this request, each variant run once "
            "between the others, which reads above a server running one model)")


with gr.Blocks(title="BERT Compression Studio") as demo:
    header = gr.Markdown(header_md())
    status_html = gr.HTML(build_status_html(), elem_id="build-panel")
    served_md = gr.Markdown(not_served_md() or empty_note())
    with gr.Tab("Classify"):
        with gr.Row():
            text_in = gr.Textbox(label="Sentence", lines=2, placeholder="Type a sentence…", scale=4)
            highlight = gr.Dropdown(choices=FAMILY.names, value=None, label="Highlight variant", scale=1)
        go = gr.Button("Classify", variant="primary")
        notes_md = gr.Markdown()
        table = gr.Dataframe(headers=CLASSIFY_HEADERS, label=data_label(), interactive=False, elem_id="predictions")
        with gr.Row():
            lat_plot = gr.BarPlot(x="variant", y="live_ms", color="shown", y_lim=[0, None], x_label_angle=-40,
                                  title="Model latency on this server, each variant timed alone and warm (ms)",
                                  color_map={"variant": "#4c78a8", "highlighted": "#e45756"})
            size_plot = gr.BarPlot(x="variant", y="size_mb", color="shown", title="Size on disk (MB)", y_lim=[0, None],
                                   x_label_angle=-40, color_map={"variant": "#4c78a8", "highlighted": "#e45756"})
        link = gr.Textbox(label="Shareable link", buttons=["copy"], interactive=False, elem_id="share-link")
        gr.Examples(EXAMPLES, inputs=text_in)
        outputs = [table, notes_md, lat_plot, size_plot, link]
        # one request per core: each variant is then timed alone on its thread, and the queue absorbs bursts
        # the table is emptied first: while a build runs each answer may have more rows than the last,
        # which Gradio 6.17 draws only after an empty value (see planned_rows)
        go.click(empty_table, None, table, api_name=False, queue=False).then(
            classify, [text_in, highlight], outputs, api_name="classify", concurrency_limit=os.cpu_count() or 1)
        text_in.submit(empty_table, None, table, api_name=False, queue=False).then(
            classify, [text_in, highlight], outputs, api_name=False, concurrency_limit=os.cpu_count() or 1)
    with gr.Tab("Compare"):
        gr.Markdown("Every variant as measured by the build: accuracy as served (each sentence on its own), its "
                    "difference to the teacher on the same sentences with a 95% paired-bootstrap interval (points) and "
                    "the sentences that flip each way (teacher right → wrong / wrong → right), out-of-domain accuracy, "
                    f"batch-1 latency on the build machine. {STAR} = recommended; ↓ = significantly worse than the "
                    "recommendation's tolerance. Click a header to sort.")
        compare_df = gr.Dataframe(compare_table(), datatype="markdown", interactive=False, elem_id="compare-table")
        points = pareto_points()
        pareto_plot = gr.ScatterPlot(points, x="latency_p50_ms", y="accuracy", color="role", elem_id="pareto-plot",
                                     y_lim=accuracy_range(points),
                                     tooltip=["variant", "accuracy", "delta_vs_teacher", "latency_p50_ms", "size_mb",
                                              "ood_balanced_accuracy"],
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
        batch_go.click(lambda: (empty_table(), empty_table()), None, [batch_table, batch_flips], api_name=False, queue=False).then(
            batch, [batch_text, batch_file], [batch_table, batch_heatmap, batch_flips, batch_notes], api_name="batch")
    # .input, not .change: only a person's choice; the poll's own choice updates must not re-render the table
    # behind its back with rows from an older poll
    highlight.input(compare_table, highlight, compare_df, api_name=False)
    demo.load(on_load, None, [text_in, highlight, notes_md], api_name=False)
    if not HUB_REPOS:  # a local folder may be growing: poll it (a Space's variants are fixed at start)
        timer = gr.Timer(POLL_S)
        shown = gr.State(-1)  # the family version this page shows; -1: the values rendered at the app's start
        timer.tick(refresh_page, [highlight, shown],
                   [status_html, header, served_md, compare_df, pareto_plot, highlight, table, shown],
                   api_name=False, show_progress="hidden")


if __name__ == "__main__":
    # status_update_rate=5: queue positions every 5 s, not a message to every waiting client
    # each time any request finishes (the "auto" default: O(queue length) writes per request)
    demo.queue(status_update_rate=5, default_concurrency_limit=8, max_size=512).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=int(os.environ.get("PORT", 7860))
    )
