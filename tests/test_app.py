"""The Gradio app over tiny built variants: API via gradio_client, UI via Chromium."""
import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from compression import serving
from compression.hubserver import wait_http
from conftest import free_port

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def app(built, tmp_path_factory, monkeypatch_module):
    _, out, _ = built
    root = tmp_path_factory.mktemp("app-variants")
    for item in out.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy)(item, root / item.name)
    shutil.copytree(out / "fp32", root / "broken")
    (root / "broken" / "model.onnx").write_bytes(b"\x00garbage")
    monkeypatch_module.setenv("BCS_VARIANTS_DIR", str(root))
    monkeypatch_module.delenv("BCS_HUB_REPOS", raising=False)
    sys.modules.pop("app", None)
    module = importlib.import_module("app")
    port = free_port()
    module.demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, server_port=port, quiet=True)
    yield module, f"http://127.0.0.1:{port}/"
    module.demo.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


def _rows(result, marks: bool = False):
    """The Classify table's rows; the recommended row's ★ taken off its name unless ``marks``."""
    table = result[0]
    rows = [dict(zip(table["headers"], row)) for row in table["data"]]
    if not marks:
        for r in rows:
            r["variant"] = r["variant"].removeprefix("★ ")
    return rows


def _answer_order(module) -> list[str]:
    """Reference first, the recommended variant next, then the rest in load order."""
    best = module.FAMILY.recommended
    return ["fp32", best] + [n for n in module.FAMILY.names if n not in ("fp32", best)]


def test_every_variant_answers_and_broken_one_is_listed(app, client):
    module, _ = app
    assert "broken" in module.FAMILY.unavailable and "broken" not in module.FAMILY.variants
    assert module.FAMILY.references["torch-int8"] == "PyTorch reference, not served"  # a reference row, not an error
    assert "torch-int8" not in module.FAMILY.unavailable and "PyTorch reference, not served" in module.not_served_md()
    result = client.predict("the acting was superb and moving", None, api_name="/classify")
    shown = [r["variant"] for r in _rows(result, marks=True)]
    best = module.FAMILY.recommended
    assert best and best != "fp32" and shown[:2] == ["fp32", f"★ {best}"]  # the two answers a user compares, on top
    assert sum("★" in v for v in shown) == 1
    rows = _rows(result)
    assert [r["variant"] for r in rows] == _answer_order(module) and sorted(_answer_order(module)) == sorted(module.FAMILY.names)
    assert {"fp32", "fp16", "int8-dynamic", "int8-static"} <= set(module.FAMILY.names)
    for r in rows:
        assert r["label"] in ("negative", "positive") and 0.5 <= r["confidence"] <= 1.0 and r["latency_ms"] > 0
        metrics = module.FAMILY.variants[r["variant"]].metrics  # accuracy beside each answer comes from metrics.json
        assert r["accuracy"] == round(metrics["accuracy"], 4) and r["build_p50_ms"] == round(metrics["latency_p50_ms"], 3)
    ref = next(r for r in rows if r["variant"] == "fp32")
    assert ref["agrees"] == "✓"
    sizes = {r["variant"]: r["size_mb"] for r in rows}
    assert sizes["fp32"] > 3 * sizes["int8-dynamic"]


@pytest.mark.parametrize(
    "text, classified, notes",
    [
        ("", None, ["Please type a sentence to classify (the input was empty)."]),
        ("   \n\t ", None, ["Please type a sentence to classify (the input was empty)."]),
        ("good " * 20_000, ("good " * 400).strip(), ["input was 100,000 characters; only the first 2,000 were classified"]),
        ("good\x00 film\x07", "good film", ["control characters were removed"]),
        ("🎬 الفيلم رائع great film", "🎬 الفيلم رائع great film", []),
        ("<script>alert(1)</script>", "<script>alert(1)</script>", []),
    ],
)
def test_odd_input(app, client, text, classified, notes):
    """Each odd input gets exactly its own notes, and its rows are the answers for the cleaned text."""
    module, _ = app
    result = client.predict(text, None, api_name="/classify")
    rows = _rows(result)
    lines = [line[2:] for line in result[1].splitlines() if line.startswith("- ")]
    own = [line for line in lines if not line.startswith("Some variants disagree")]
    assert own == [n.replace("<", "&lt;").replace(">", "&gt;") for n in notes]
    assert "<script>" not in result[1]
    if classified is None:
        assert rows == []
        return
    for r in rows:  # the label each variant gives the cleaned text on its own
        runner = module.FAMILY.variants[r["variant"]].runner
        probs = serving.softmax(runner.forward(runner.encode([classified])))[0]
        assert r["label"] == runner.config["id2label"][str(int(probs.argmax()))]
    disagree = len({r["label"] for r in rows}) > 1
    assert disagree == any(line.startswith("Some variants disagree") for line in lines)


def test_query_params_preselect_and_unknown_variant(app):
    module, _ = app

    class FakeRequest:
        def __init__(self, params):
            self.query_params = params

    text, update, notes = module.on_load(FakeRequest({"variant": "int8-dynamic", "text": "so dull"}))
    assert text == "so dull" and update["value"] == "int8-dynamic" and notes == ""
    text, update, notes = module.on_load(FakeRequest({"variant": "int9", "text": "x"}))
    assert update["value"] is None and "Unknown variant 'int9'" in notes
    class PageRequest:  # what Gradio hands a handler: the page's address arrives as the referer
        headers = {"referer": "https://example.hf.space/studio/?text=old&variant=fp32"}

    df, _, chart, _, link = module.classify("so dull", "int8-dynamic", PageRequest())
    assert link == "https://example.hf.space/studio/?text=so+dull&variant=int8-dynamic"  # a whole link, old query replaced
    assert "▶ int8-dynamic" in [v.replace("★ ", "") for v in df["variant"]]  # ★ too when the timings made it the recommended row
    assert chart.set_index("variant").loc["int8-dynamic", "shown"] == "highlighted"
    assert (chart["shown"] == "highlighted").sum() == 1
    assert any(v.startswith("▶ ") and "int8-dynamic" in v for v in module.compare_table("int8-dynamic")["variant"])


def test_batch_with_labels_and_bad_files(app, tmp_path):
    module, _ = app
    good = tmp_path / "b.csv"
    good.write_text("sentence,label\nsuperb film,1\nawful plot,0\nbrilliant acting,1\n")
    table, heatmap, flips, notes = module.batch("", str(good))
    assert set(table["variant"]) == set(module.FAMILY.names) and "accuracy" in table
    for row in table.to_dict("records"):  # each variant's accuracy is its own answers against the labels
        runner = module.FAMILY.variants[row["variant"]].runner
        pred = [int(runner.forward(runner.encode([t])).argmax()) for t in ("superb film", "awful plot", "brilliant acting")]
        assert row["accuracy"] == round(sum(p == y for p, y in zip(pred, (1, 0, 1))) / 3, 4)
    assert 'id="agreement-heatmap"' in heatmap and heatmap.count("<tr>") == len(module.FAMILY.names) + 1
    assert "get a different label from fp32" in notes
    for row in flips.to_dict("records"):  # every listed sentence really differs from the reference somewhere
        assert any(v != row["fp32"] for k, v in row.items() if k not in ("sentence", "fp32") and isinstance(v, str))
    bad = tmp_path / "bad.csv"
    bad.write_text('sentence,label\n"unterminated,1\nok,0,extra\n')
    table, heatmap, flips, notes = module.batch("", str(bad))
    assert table.empty and heatmap == "" and "malformed CSV (unexpected end of data)" in notes
    extra = tmp_path / "extra.csv"
    extra.write_text("sentence,label\nok,0\nfine film,1,surplus\n")
    assert "extra.csv:3: 3 field(s), the header has 2" in module.batch("", str(extra))[3]
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("review\nnice\n")
    assert "no text column 'sentence' or 'text'" in module.batch("", str(nocol))[3]
    lines = "\n".join(["good film"] * (serving.MAX_BATCH_ROWS + 5))
    table, _, _, notes = module.batch(lines, None)
    assert table["sentences"].iloc[0] == serving.MAX_BATCH_ROWS and "row cap" in notes


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (.ci/run installs it)")
def test_real_browser_types_and_sees_one_row_per_variant(app, tmp_path):
    from playwright.sync_api import sync_playwright

    module, url = app
    dialogs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1300})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url + "?variant=int8-dynamic&text=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        box = page.get_by_label("Sentence")
        page.wait_for_function("() => document.querySelector('textarea') && document.querySelector('textarea').value.length > 0", timeout=20000)
        assert box.input_value() == "<script>alert(1)</script>"  # filled from the link, as text
        box.fill("a charming and moving film")
        page.get_by_role("button", name="Classify").click()
        first_col = page.locator('#predictions [data-testid^="cell-"][data-col="0"]')
        page.wait_for_function(
            f"() => document.querySelectorAll('#predictions [data-testid^=\"cell-\"][data-col=\"0\"]').length === {len(module.FAMILY.names)}",
            timeout=30000,
        )
        names = [t.strip() for t in first_col.all_inner_texts()]
        plain = [n.replace("▶ ", "").replace("★ ", "") for n in names]
        assert plain == _answer_order(module)  # the reference and the recommended answers on top
        assert "★" in names[1] and sum("★" in n for n in names) == 1
        assert [n for n in names if n.startswith("▶ ")] == [names[plain.index("int8-dynamic")]]  # preselected by the link
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        browser.close()
    assert (tmp_path / "app.png").stat().st_size > 20_000
    assert dialogs == []  # the <script> was never executed


def test_predict_runs_each_variant_once_and_reports_that_runs_time(app):
    module, _ = app
    calls = {}
    originals = {name: v.runner.forward for name, v in module.FAMILY.variants.items()}

    def counting(name):
        def forward(enc):
            calls[name] = calls.get(name, 0) + 1
            return originals[name](enc)
        return forward

    try:
        for name, v in module.FAMILY.variants.items():
            v.runner.forward = counting(name)
        rows, _ = serving.predict(module.FAMILY, "a quietly moving film")
    finally:
        for name, v in module.FAMILY.variants.items():
            v.runner.forward = originals[name]
    assert calls == {name: 1 for name in module.FAMILY.variants}  # one forward answers and is timed
    assert all(r["latency_ms"] > 0 for r in rows)
    # one tokenization per distinct tokenizer, and each variant's answer is what its own encoding gives
    keys = {v.runner.encode_key for v in module.FAMILY.variants.values()}
    assert len(keys) < len(module.FAMILY.variants)
    for r in rows:
        runner = module.FAMILY.variants[r["variant"]].runner
        probs = serving.softmax(runner.forward(runner.encode(["a quietly moving film"])))[0]
        assert abs(r["confidence"] - round(float(probs.max()), 4)) < 1e-3


def test_compare_tab_values_come_from_each_metrics_file(app):
    from compression.report import delta_text

    module, _ = app
    df = module.compare_table()
    by_name = {v.replace("★ ", "").replace(" ↓", ""): row for v, row in zip(df["variant"], df.to_dict("records"))}
    assert set(by_name) == {r["variant"] for r in module.FAMILY.rows}
    for r in module.FAMILY.rows:
        row = by_name[r["variant"]]
        assert row["accuracy"] == round(r["accuracy"], 4) and row["latency_p50_ms"] == round(r["latency_p50_ms"], 2)
        assert row["delta_vs_teacher"] == delta_text(r) and row["flips"] == f"{r['flips_lost']} / {r['flips_gained']}"
    assert by_name["teacher"]["delta_vs_teacher"] == "+0.00 [+0.00, +0.00]"
    assert sum("★" in v for v in df["variant"]) == 1
    points = module.pareto_points()
    assert set(points["variant"]) == set(by_name) and (points["role"] == "recommended").sum() == 1
    lo, hi = module.accuracy_range(points)  # no point on the plot's edge, where it would be cut in half
    assert lo < points["accuracy"].min() - 0.1 and hi > points["accuracy"].max() + 0.1
    assert module.pareto_plot_update()["y_lim"] == [lo, hi]
    assert module.accuracy_range(points.iloc[0:0]) is None


def test_concurrent_requests_each_get_every_variant(app, client):
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    module, url = app
    texts = [f"a {w} film" for w in ("superb", "dull", "moving", "boring", "fine", "ugly", "smart", "flat")]
    clients = [Client(url, verbose=False) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: clients[i % 4].predict(texts[i], None, api_name="/classify"), range(8)))
    for text, result in zip(texts, results):
        rows = _rows(result)
        assert [r["variant"] for r in rows] == _answer_order(module), text
        fp32 = module.FAMILY.variants["fp32"].runner
        want = fp32.config["id2label"][str(int(fp32.forward(fp32.encode([text])).argmax()))]
        assert next(r for r in rows if r["variant"] == "fp32")["label"] == want   # no answer crossed to another request


def _start_app(env_extra, tmp_path, port):
    import os
    import subprocess

    env = {**os.environ, "PORT": str(port), **env_extra}
    env.pop("BCS_HUB_REPOS", None)
    log = open(tmp_path / f"app-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = tmp_path / f"app-{port}.log"
    return proc


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except Exception:
        proc.kill()


@pytest.mark.parametrize("case", ["empty", "all-broken"])
def test_a_folder_with_nothing_servable_gives_a_clear_page(built, tmp_path, case):
    from gradio_client import Client

    _, out, _ = built
    folder = tmp_path / "v"
    folder.mkdir()
    if case == "all-broken":
        for name in ("fp32", "int8-dynamic"):
            shutil.copytree(out / name, folder / name)
            (folder / name / "model.onnx").write_bytes(b"\x00garbage")
    port = free_port()
    proc = _start_app({"BCS_VARIANTS_DIR": str(folder), "BCS_BUILD": "0"}, tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        result = Client(f"http://127.0.0.1:{port}/", verbose=False).predict("good film", None, api_name="/classify")
        assert _rows(result) == []
        assert "No variant is ready to answer yet." in result[1]
        if case == "all-broken":
            assert "No variant could be loaded" in result[1] and "fp32" in result[1] and "rebuild this variant" in result[1]
    finally:
        _stop(proc)
    log = proc.log_path.read_text()
    assert "Traceback" not in log, log


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (.ci/run installs it)")
def test_first_run_serves_at_once_and_rows_appear_without_a_reload(tiny_model, tiny_data, tmp_path):
    """`python app.py` on an empty folder: the page is up while the build runs in its own process,
    shows its progress, and grows a row per finished variant; a second app follows instead of building."""
    import json
    import time

    from playwright.sync_api import sync_playwright

    from compression import progress
    from conftest import tiny_recipe_dict

    recipe = tmp_path / "tiny.json"
    d = tiny_recipe_dict(tiny_model, tiny_data, **{
        "fp32": ["export"], "int8-dynamic": ["export", "quantize_dynamic"],
        "student": [{"distill": {"num_layers": 1, "max_steps": 400, "batch_size": 16}}, "quantize_dynamic"]})
    recipe.write_text(json.dumps(d))
    folder = tmp_path / "variants"
    port, port2 = free_port(), free_port()
    proc = _start_app({"BCS_VARIANTS_DIR": str(folder), "BCS_RECIPE": str(recipe)}, tmp_path, port)
    second = None
    counts = []
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        second = _start_app({"BCS_VARIANTS_DIR": str(folder), "BCS_RECIPE": str(recipe)}, tmp_path, port2)
        wait_http(f"http://127.0.0.1:{port2}/", second)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#build-status.running", timeout=60000)
            assert "Building" in page.inner_text("#build-status")
            # classify as soon as the first variant is served: it answers alone while the rest build
            page.wait_for_function("() => /[1-9]\\d* variants loaded/.test(document.body.innerText)", timeout=120000)
            page.get_by_label("Sentence").fill("a charming film")
            page.get_by_role("button", name="Classify").click()
            page.wait_for_selector('#predictions [data-testid^="cell-"][data-col="0"]', timeout=30000)
            early = page.locator('#predictions [data-testid^="cell-"][data-col="0"]').count()
            page.get_by_role("tab", name="Compare").click()
            # a row per planned variant from the start ("◌ name", building…); each fills in when finished
            filled = ("() => [...document.querySelectorAll('#compare-table [data-testid^=\"cell-\"][data-col=\"0\"]')]"
                      ".filter(c => !c.innerText.includes('◌')).length")
            deadline = time.time() + 300
            while time.time() < deadline:
                counts.append(page.evaluate(filled))
                if page.locator("#build-status.done").count():
                    break
                time.sleep(0.5)
            page.wait_for_function(f"() => ({filled})() === 4", timeout=60000)   # teacher, fp32, int8-dynamic, student
            assert page.locator('#compare-table [data-testid^="cell-"][data-col="0"]').count() == 4  # no placeholder left
            assert "Build finished" in page.inner_text("#build-status")
            page.get_by_role("tab", name="Classify").click()
            page.get_by_role("button", name="Classify").click()  # more rows than the early answer: all drawn
            page.wait_for_function("() => document.querySelectorAll('#predictions [data-testid^=\"cell-\"][data-col=\"0\"]')"
                                   ".length === 3", timeout=30000)   # every finished variant answers, no reload
            page.screenshot(path=str(tmp_path / "first-run.png"), full_page=True)
            late = browser.new_page()  # opened after the build: its first poll brings it up to date
            late.goto(f"http://127.0.0.1:{port2}/")
            late.get_by_role("tab", name="Compare").click()
            late.wait_for_function("() => document.querySelectorAll('#compare-table [data-testid^=\"cell-\"][data-col=\"0\"]')"
                                   ".length === 4", timeout=30000)
            browser.close()
    finally:
        for p_ in (proc, second):
            if p_ is not None:
                _stop(p_)
    assert 1 <= early <= 3
    assert any(0 < c < 4 for c in counts), counts                       # rows appeared while the build was running
    assert counts == sorted(counts)                                      # and only ever grew
    state = progress.read(folder)
    assert state["state"] == "done" and state["finished"][0] == "teacher"
    assert "is building" in second.log_path.read_text()                 # the second app followed, did not build
    assert (folder / "build.log").read_text().count("[1/4] teacher done") == 1


def test_the_build_panel_tells_each_state(app, tmp_path, monkeypatch):
    """What the page says about a build: running (stage, steps, estimate), failed (the one-line error;
    finished variants still served), stopped (process gone), done."""
    from compression import artifacts, progress

    module, _ = app
    monkeypatch.setattr(module, "VARIANTS_DIR", tmp_path)
    p = progress.Progress(tmp_path, ["fp32", "student"], [0.0, 100.0], teacher_work=100.0)
    with progress.BuildLock(tmp_path):  # as the build process holds it
        p.begin("teacher")
        p.step(30, 100)
        p.save(force=True)
        html = module.build_status_html()
        assert 'class="running"' in html and "teacher" in html and "step 30 of 100" in html and "fp32, student" in html
        p.fail("DataError: dataset not found: /data/x")
        html = module.build_status_html()
        assert 'class="failed"' in html and "DataError: dataset not found: /data/x" in html and "still served" in html
    state = json.loads((tmp_path / artifacts.PROGRESS).read_text())
    state["state"] = "running"
    (tmp_path / artifacts.PROGRESS).write_text(json.dumps(state))
    assert "its process is gone" in module.build_status_html()     # the lock is free: nobody is building
    assert module.building_names() == []


def test_compare_table_lists_the_plan_and_keeps_its_row_count(app, tmp_path, monkeypatch):
    """While a build runs the Compare tab has a row per planned variant: the served ones with their
    numbers, the rest as placeholders that say why (building, skipped, not built). The row count does
    not change as the build goes on (a changed count is not drawn by Gradio 6.17's Dataframe)."""
    from compression import progress

    module, _ = app
    monkeypatch.setattr(module, "VARIANTS_DIR", tmp_path)
    served = [r["variant"] for r in module.FAMILY.rows]
    names = [n for n in served if n != "teacher"] + ["later", "odd"]
    p = progress.Progress(tmp_path, names, [1.0] * len(names), teacher_work=1.0)
    with progress.BuildLock(tmp_path):
        p.begin("later")
        p.skip("odd", "needs a BERT-style model")
        table = module.compare_table()
        assert len(table) == len(served) + 2
        waiting = dict(zip(table["variant"], table["delta_vs_teacher"]))
        assert waiting["◌ later"] == "building…" and waiting["◌ odd"] == "skipped: needs a BERT-style model"
        assert sum(not v.startswith("◌") for v in table["variant"]) == len(served)   # every served row kept its numbers
        assert table["accuracy"].notna().sum() == len(served)
        p.fail("BuildError: out of disk")
    table = module.compare_table()
    assert len(table) == len(served) + 2
    assert dict(zip(table["variant"], table["delta_vs_teacher"]))["◌ later"].startswith("not built")
    monkeypatch.setattr(module, "VARIANTS_DIR", tmp_path / "none")   # no build at all: only what is served
    assert len(module.compare_table()) == len(served)
