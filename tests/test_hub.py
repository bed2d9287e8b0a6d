"""Publishing against a local Hub-protocol server with the real, unmodified clients."""
import json
import logging
import os
import shutil
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import HUB_PORT, REPO
from compression.hubserver import Handler, HubState, git_sha1, space_output, start_space, wait_http

TOKEN = "hf_testtoken_DO_NOT_LEAK_1234567890"
READONLY = "hf_readonly_token_0987654321"
NS = "studio"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The test Hub on the port HF_ENDPOINT already names."""
    import threading
    from http.server import ThreadingHTTPServer

    state = HubState(tmp_path_factory.mktemp("hub-storage"), {TOKEN: {NS}, READONLY: {"someone-else"}})
    server = ThreadingHTTPServer(("127.0.0.1", HUB_PORT), type("H", (Handler,), {"state": state}))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def published(hub, built, tmp_path_factory):
    from compression.hub import publish

    _, out, _ = built
    work = tmp_path_factory.mktemp("pub") / "variants"
    shutil.copytree(out, work)
    os.environ["HF_TOKEN"] = TOKEN
    try:
        result = publish(work, NS, prefix="tiny", retry_delay=0.01)
    finally:
        os.environ.pop("HF_TOKEN")
    return work, result


def _files(hub, repo_id, rtype="model"):
    return hub.head(rtype, repo_id)["files"]


def test_every_variant_repo_has_all_files(hub, published):
    work, result = published
    assert set(result["repos"]) == {"teacher", "fp32", "fp16", "int8-dynamic", "int8-emb4", "int8-static", "w4"}  # torch-int8 is local-only
    card = hub.blob(_files(hub, result["repos"]["int8-emb4"])["README.md"]).decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model_relation"] == "quantized" and {"4-bit", "onnx"} <= set(meta["tags"])
    for name, repo_id in result["repos"].items():
        local = {p.name for p in (work / name).iterdir()}
        remote = set(_files(hub, repo_id))
        assert remote == local | {"README.md"}, name
        for f in local:
            assert hub.blob(_files(hub, repo_id)[f]) == (work / name / f).read_bytes()


def test_card_yaml_parses_to_model_index(hub, published):
    work, result = published
    for name, repo_id in result["repos"].items():
        card = hub.blob(_files(hub, repo_id)["README.md"]).decode()
        meta = yaml.safe_load(card.split("---")[1])
        metrics = json.loads((work / name / "metrics.json").read_text())
        assert meta["pipeline_tag"] == "text-classification"
        assert meta["library_name"] == ("transformers" if name == "teacher" else "onnx")
        results = meta["model-index"][0]["results"][0]
        assert results["dataset"]["name"] == "synthetic reviews" and results["dataset"]["split"] == "validation"
        assert "SST-2" not in card and "nyu-mll/glue" not in card and "datasets" not in meta  # named from the recipe only
        assert "synthetic reviews" in card and "ood.tsv" in card  # the out-of-domain set by its own name
        values = {m["type"]: m["value"] for m in results["metrics"]}
        assert values["accuracy"] == round(metrics["accuracy"], 4)
        ood = next(r for r in meta["model-index"][0]["results"] if r["task"]["name"].endswith("(out of domain)"))
        ood_values = {m["type"]: m["value"] for m in ood["metrics"]}  # the balanced one is the report's and the app's
        assert ood_values == {"accuracy": round(metrics["ood_accuracy"], 4),
                              "balanced_accuracy": round(metrics["ood_balanced_accuracy"], 4)}
        if name != "teacher":
            assert meta["base_model"] == f"{NS}/tiny-teacher"
            assert meta["base_model_relation"] == "quantized"
            assert "ORTModelForSequenceClassification.from_pretrained" in card
        assert f"| accuracy | {metrics['accuracy']:.4f}" in card
        table = card[card.index("| metric |"):card.index("| parameters |")]
        assert "out-of-domain accuracy" in table and "latency p50" in table
        assert all(line.startswith("|") for line in table.splitlines()), table  # one Markdown table: no blank line splits it
        assert metrics["cpu"] in card
        low, high = metrics["latency_p50_round_range_ms"]  # the timing pass's spread, as the card says it
        assert f"({metrics['latency_timing']}; one round's p50 ranged {low:.2f}–{high:.2f} ms)" in card
        from compression.report import delta_text  # the difference to the teacher, its interval and flips, on every card

        assert f"| difference to the teacher, points [95% CI] | {delta_text(metrics)} |" in card
        assert f"| {metrics['flips_lost']} / {metrics['flips_gained']} |" in card
    int8 = hub.blob(_files(hub, f"{NS}/tiny-int8-dynamic")["README.md"]).decode()
    assert "int8" in yaml.safe_load(int8.split("---")[1])["tags"]


def test_collection_groups_the_family(hub, published):
    _, result = published
    col = hub.collections[result["collection"]]
    assert {i["id"] for i in col["items"]} == set(result["repos"].values())
    noted = [i for i in col["items"] if i.get("note")]
    assert len(noted) == 1 and noted[0]["id"].endswith(result["recommended"])


def test_from_pretrained_round_trip(published):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from compression.loader import load_runner

    work, _ = published
    texts = ["the acting was superb", "a dull and boring plot", "fine"]
    model = ORTModelForSequenceClassification.from_pretrained(f"{NS}/tiny-int8-dynamic")
    tok = AutoTokenizer.from_pretrained(f"{NS}/tiny-int8-dynamic")
    remote = model(**tok(texts, padding=True, return_tensors="np")).logits
    local = load_runner(work / "int8-dynamic").logits(texts)
    np.testing.assert_allclose(remote, local, atol=1e-6)
    teacher = AutoModelForSequenceClassification.from_pretrained(f"{NS}/tiny-teacher")
    assert teacher.config.id2label[1] == "positive"


def test_republish_makes_no_commit(hub, published):
    from compression.hub import publish

    work, first = published
    before = {r: hub.commit_count(r) for r in first["repos"].values()}
    again = publish(work, NS, prefix="tiny", token=TOKEN, retry_delay=0.01)
    assert {r: hub.commit_count(r) for r in first["repos"].values()} == before
    assert again["commits"] == first["commits"]


def test_missing_files_refused_before_upload(hub, published, tmp_path):
    from compression.errors import PublishError
    from compression.hub import publish

    work, _ = published
    broken = tmp_path / "variants"
    shutil.copytree(work, broken)
    (broken / "fp16" / "metrics.json").unlink()
    n = len(hub.requests)
    with pytest.raises(PublishError, match="fp16: missing metrics.json"):
        publish(broken, NS, prefix="other", token=TOKEN)
    assert len(hub.requests) == n


@pytest.mark.parametrize("token", [None, "hf_wrong", READONLY])
def test_auth_failures_are_one_clear_line(hub, published, token, capfd):
    from compression.errors import AuthError
    from compression.hub import publish

    work, _ = published
    with pytest.raises(AuthError) as exc:
        publish(work, NS, prefix="auth", token=token or False, retry_delay=0.01)
    assert f"token lacks write access to {NS}" in str(exc.value)
    assert "not published" in str(exc.value)


def test_server_errors_retried_then_reported(hub, published, caplog):
    from compression.errors import PublishError
    from compression.hub import publish

    work, _ = published
    caplog.set_level(logging.WARNING, logger="compression")
    hub.inject(500, r"/commit/", times=2)
    hub.inject("drop", r"/preupload/", times=1)
    result = publish(work, NS, prefix="flaky", token=TOKEN, retry_delay=0.01)
    assert all(hub.commit_count(r) == 1 for r in result["repos"].values())
    assert "HTTP 500, retrying" in caplog.text and "connection problem" in caplog.text
    hub.inject(503, r"tiny2-int8-dynamic/commit", times=10)
    with pytest.raises(PublishError) as exc:
        publish(work, NS, prefix="tiny2", token=TOKEN, retry_delay=0.01, attempts=3)
    msg = str(exc.value)
    assert "publishing studio/tiny2-int8-dynamic failed" in msg
    assert "published: ['studio/tiny2-fp16', 'studio/tiny2-fp32']" in msg and "studio/tiny2-teacher" in msg.split("not published")[1]
    hub.faults.clear()


def test_cli_publish_and_space(hub, published, tmp_path):
    work, result = published
    env = {**os.environ, "HF_TOKEN": TOKEN}
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "compression", *a], cwd=REPO, capture_output=True, text=True,  # noqa: E731
                                          timeout=300, env=kw.get("env", env))
    res = run("publish", "--variants-dir", str(work), "--namespace", NS, "--prefix", "tiny")
    assert res.returncode == 0, res.stderr
    assert f"int8-dynamic: {NS}/tiny-int8-dynamic" in res.stdout
    bad = run("publish", "--variants-dir", str(work), "--namespace", NS, "--prefix", "tiny", env={**env, "HF_TOKEN": "hf_nope"})
    assert bad.returncode == 2 and f"error: token lacks write access to {NS}" in bad.stderr and "Traceback" not in bad.stderr
    res = run("publish-space", "--namespace", NS, "--variants-dir", str(work), "--prefix", "tiny")
    assert res.returncode == 0, res.stderr
    files = hub.head("space", f"{NS}/bert-compression-studio")["files"]
    assert {"app.py", "requirements.txt", "compression/__init__.py", "compression/serving.py", "README.md",
            "space_config/hub_repos.txt"} <= set(files)
    assert not {f for f in files if f.startswith("compression/steps/") or f in ("compression/build.py", "compression/loader.py",
                                                                                  "compression/teacher.py")}
    requirements = hub.blob(files["requirements.txt"]).decode()
    assert "onnxruntime==" in requirements and "gradio==" in requirements
    assert not {"torch", "transformers", "pytest", "playwright", "optimum"} & {
        line.split("=")[0].split("[")[0].strip() for line in requirements.splitlines() if line and not line.startswith("#")}
    meta = yaml.safe_load(hub.blob(files["README.md"]).decode().split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["sdk_version"].startswith("6.")
    assert set(meta["models"]) == set(result["repos"].values())  # the teacher too: its metrics are the reference row
    for out in (res.stdout + res.stderr, bad.stdout + bad.stderr):
        assert TOKEN not in out


def test_space_app_loads_variants_from_hub(published):
    from compression import serving

    _, result = published
    repos = [result["repos"][n] for n in ("teacher", "fp32", "int8-dynamic")] + [f"{NS}/does-not-exist"]
    family = serving.load_family(repo_ids=repos)
    assert set(family.variants) == {"tiny-fp32", "tiny-int8-dynamic"}
    assert "does-not-exist" in family.unavailable
    assert family.references == {"tiny-teacher": "PyTorch reference, not served"}
    assert {r["variant"] for r in family.rows} == {"tiny-teacher", "tiny-fp32", "tiny-int8-dynamic"}  # from metrics.json
    assert all(r["hub_repo"] for r in family.rows)
    assert family.reference == "tiny-fp32"  # the fp32 graph answers first, whatever order the repos come in
    rows, _ = serving.predict(family, "superb acting")
    assert len(rows) == 2


def test_a_space_recommends_what_the_build_recommended(published):
    """Every published repo in the Space: the recommendation and the reference are the local build's, under
    the repos' names (the Space once fell back to the most accurate row: it looked for a row named "teacher")."""
    from compression import serving

    work, result = published
    local = serving.load_family(work)
    names = sorted(result["repos"], key=lambda n: n != "int8-dynamic")  # the fp32 graph not first
    family = serving.load_family(repo_ids=[result["repos"][n] for n in names])
    shown = {n: result["repos"][n].split("/")[-1] for n in names}
    assert local.recommended and family.recommended == shown[local.recommended]
    assert family.reference == shown["fp32"] and next(iter(family.variants)) == shown["fp32"]


def test_token_never_leaks(hub, published):
    work, _ = published
    for method, path, status, body in hub.responses:
        assert TOKEN.encode() not in body, (method, path)
    for (rtype, repo_id), repo in hub.repos.items():
        for commit in repo["commits"]:
            for sha in commit["files"].values():
                assert TOKEN.encode() not in hub.blob(sha), repo_id
    for f in work.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f
    assert git_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # the server's ids are real git blob ids


def test_dry_run_uploads_nothing_and_injected_401(hub, published, capsys):
    from compression.errors import AuthError
    from compression.hub import publish

    work, _ = published
    n = len(hub.requests)
    result = publish(work, NS, prefix="dry", token=TOKEN, dry_run=True)
    assert len(hub.requests) == n and result["commits"] == {} and result["collection"] is None
    out = capsys.readouterr().out
    assert f"-> {NS}/dry-int8-dynamic" in out and "README.md" in out and TOKEN not in out
    hub.inject(401, r"/preupload/", times=1)
    with pytest.raises(AuthError, match=f"token lacks write access to {NS}"):
        publish(work, NS, prefix="tiny", token=TOKEN, retry_delay=0.01)


def test_card_tells_how_to_run_on_a_phone_when_ort_exists(published, tmp_path):
    from compression.hub import build_card

    work, _ = published
    folder = tmp_path / "v"
    shutil.copytree(work / "int8-dynamic", folder)
    assert "optimize --mobile" in str(build_card(folder, f"{NS}/x", None, None, False))
    (folder / "model.ort").write_bytes(b"ort")
    card = str(build_card(folder, f"{NS}/x", None, None, False))
    assert "`model.ort`" in card and "onnxruntime-react-native" in card and "tokenizer.json" in card


def test_card_of_a_recommended_row_says_when_it_has_the_edge_over_optimum_int8(published, tmp_path):
    from compression.hub import build_card

    work, _ = published
    folder = tmp_path / "v"
    shutil.copytree(work / "int8-dynamic", folder)
    words = lambda card: " ".join(str(card).replace("\n>", " ").split())  # noqa: E731  (the quote's lines joined)
    edge = words(build_card(folder, f"{NS}/x", None, None, True, edge=True))
    plain = words(build_card(folder, f"{NS}/x", None, None, True))
    assert "Recommended variant" in edge and "Recommended variant" in plain
    assert "at least 2× as fast as Optimum's int8 route at no more than 0.5× its size" in edge
    assert "Optimum's int8 route at no more" not in plain


def test_card_of_a_recommended_row_states_the_recipes_accuracy_rule(published, tmp_path):
    """The card says the bar the report applied: "within 1.0 points" by default, "at least 99% of the
    teacher's" (with the points it comes to) for a recipe whose criterion is relative."""
    import json

    from compression.hub import build_card

    work, _ = published
    folder = tmp_path / "v"
    shutil.copytree(work / "int8-dynamic", folder)
    words = lambda card: " ".join(str(card).replace("\n>", " ").split())  # noqa: E731
    assert "the fastest whose accuracy is within 1.0 points of the teacher's" in words(build_card(folder, f"{NS}/x", None, None, True))
    cc = json.loads((folder / "compression_config.json").read_text())
    cc["recipe"].setdefault("evaluation", {}).update(recommend_tolerance=0.01, recommend_criterion="relative")
    (folder / "compression_config.json").write_text(json.dumps(cc))
    teacher = {**json.loads((work / "teacher" / "metrics.json").read_text()), "accuracy": 0.8807}
    card = words(build_card(folder, f"{NS}/x", None, teacher, True))
    assert "the fastest whose accuracy is at least 99% of the teacher's (within 0.88 points)" in card
    assert "within 1.0 points" not in card


def test_space_from_published_repos_runs_without_torch_in_a_browser(hub, published, tmp_path):
    """publish -> publish_space -> download the Space repo -> start it (no torch) -> Chromium."""
    import socket

    from huggingface_hub import snapshot_download

    from compression.hub import publish_space

    chromium = Path("/usr/bin/chromium")
    work, result = published
    space = publish_space(NS, list(result["repos"].values()), name="space-e2e", token=TOKEN)
    folder = Path(snapshot_download(space, repo_type="space", local_dir=tmp_path / "space"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_space(folder, tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        from gradio_client import Client

        served = {f"tiny-{n}" for n in ("fp32", "fp16", "int8-dynamic", "int8-emb4", "int8-static", "w4")}
        table = Client(f"http://127.0.0.1:{port}/", verbose=False).predict("not bad at all", None, api_name="/classify")[0]
        names = [row[0] for row in table["data"]]
        assert {n.removeprefix("★ ") for n in names} == served  # every published ONNX variant answers without torch
        assert sum(n.startswith("★ ") for n in names) == 1  # the Space recommends one, from the published metrics
        if not chromium.exists():
            pytest.skip("Debian chromium not installed (.ci/run installs it); the API half passed")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"http://127.0.0.1:{port}/?text=not+bad+at+all")  # as a shared link opens it
            page.wait_for_function("() => document.querySelector('textarea') && "
                                   "document.querySelector('textarea').value === 'not bad at all'", timeout=30000)
            page.get_by_role("button", name="Classify").click()
            page.wait_for_function("() => document.querySelectorAll('#predictions [data-testid^=\"cell-\"][data-col=\"0\"]')"
                                   f".length === {len(served)}", timeout=30000)
            link = page.locator("#share-link textarea, #share-link input").first.input_value()
            assert link.startswith(f"http://127.0.0.1:{port}/?text=not+bad+at+all")  # a whole link, from the page's address
            page.screenshot(path=str(os.environ.get("BCS_SCREENSHOT_DIR", tmp_path)) + "/space-classify.png", full_page=True)
            page.get_by_role("tab", name="Compare").click()
            rows = len(result["repos"])  # teacher + every published variant, from their metrics.json
            page.wait_for_function("() => document.querySelectorAll('#compare-table [data-testid^=\"cell-\"][data-col=\"0\"]')"
                                   f".length === {rows}", timeout=30000)
            page.wait_for_selector("#pareto-plot canvas, #pareto-plot svg", timeout=30000)  # the native plot rendered
            names = page.locator('#compare-table [data-testid^="cell-"][data-col="0"]').all_inner_texts()
            assert sum("★" in n for n in names) == 1 and any("teacher" in n for n in names)
            page.screenshot(path=str(os.environ.get("BCS_SCREENSHOT_DIR", tmp_path)) + "/space-compare.png", full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        out = space_output(proc)
    assert "No module named 'torch'" not in out and "Traceback" not in out, out


def test_rate_limits_are_retried_after_the_time_the_hub_asks(hub, published, caplog):
    import time

    from compression.hub import publish

    work, _ = published
    caplog.set_level(logging.WARNING, logger="compression")
    hub.inject(429, r"tiny3-fp32/commit", times=2)
    t0 = time.perf_counter()
    result = publish(work, NS, prefix="tiny3", token=TOKEN, retry_delay=0.01)
    assert time.perf_counter() - t0 >= 2 * hub.retry_after             # Retry-After honoured, not the 0.01 s schedule
    assert hub.commit_count(result["repos"]["fp32"]) == 1
    assert caplog.text.count("HTTP 429, retrying in 0.2s") == 2


@pytest.mark.parametrize("fault, times, outcome", [
    (500, 2, "deployed"), ("drop", 1, "deployed"), (429, 2, "deployed"),
    (503, 10, "PublishError"), (401, 1, "AuthError"), (403, 1, "AuthError"),
])
def test_publish_space_handles_errors_like_publish(hub, published, fault, times, outcome, caplog):
    from compression.errors import AuthError, PublishError
    from compression.hub import publish_space

    _, result = published
    name = f"space-{fault}-{times}"
    hub.inject(fault, rf"{name}.*/(preupload|commit)/", times=times)
    try:
        if outcome == "deployed":
            space = publish_space(NS, list(result["repos"].values()), name=name, token=TOKEN, retry_delay=0.01)
            assert hub.commit_count(space, "space") == 1 and "app.py" in hub.head("space", space)["files"]
            return
        with pytest.raises(AuthError if outcome == "AuthError" else PublishError) as exc:
            publish_space(NS, list(result["repos"].values()), name=name, token=TOKEN, retry_delay=0.01, attempts=3)
        message = str(exc.value)
        assert "\n" not in message and TOKEN not in message and f"{NS}/{name}" in message
        assert (f"HTTP {fault}" in message) if outcome == "AuthError" else ("failed after 3 attempts (HTTP 503)" in message)
    finally:
        hub.faults.clear()
    assert TOKEN not in caplog.text


def test_republish_after_one_variant_changed_commits_only_that_repo(hub, published, tmp_path):
    from compression.hub import publish

    work, first = published
    again_dir = tmp_path / "v"
    shutil.copytree(work, again_dir)
    m = json.loads((again_dir / "fp16" / "metrics.json").read_text())
    m["latency_p50_ms"] += 1.0  # re-measured on another day
    (again_dir / "fp16" / "metrics.json").write_text(json.dumps(m))
    before = {r: hub.commit_count(r) for r in first["repos"].values()}
    publish(again_dir, NS, prefix="tiny", token=TOKEN, retry_delay=0.01)
    after = {r: hub.commit_count(r) for r in first["repos"].values()}
    assert {r for r in before if after[r] != before[r]} == {f"{NS}/tiny-fp16"}
    assert after[f"{NS}/tiny-fp16"] == before[f"{NS}/tiny-fp16"] + 1


def test_cli_publish_private_and_space_from_explicit_repos(hub, published):
    work, result = published
    env = {**os.environ, "HF_TOKEN": TOKEN}
    run = lambda *a: subprocess.run([sys.executable, "-m", "compression", *a], cwd=REPO, capture_output=True,  # noqa: E731
                                    text=True, timeout=300, env=env)
    res = run("publish", "--variants-dir", str(work), "--namespace", NS, "--prefix", "priv", "--private")
    assert res.returncode == 0, res.stderr
    assert all(hub.repos[("model", f"{NS}/priv-{n}")]["private"] for n in result["repos"])
    repos = [f"{NS}/priv-fp32", f"{NS}/priv-int8-dynamic"]
    res = run("publish-space", "--namespace", NS, "--name", "two-variants", "--repos", *repos)
    assert res.returncode == 0 and res.stdout.strip() == f"{NS}/two-variants", res.stderr
    files = hub.head("space", f"{NS}/two-variants")["files"]
    assert hub.blob(files["space_config/hub_repos.txt"]).decode().split() == repos
    assert TOKEN not in res.stdout + res.stderr


def test_a_users_own_data_is_named_on_its_card_and_sst2_nowhere(hub, tmp_path, tiny_model):
    """optimize on a user's CSV, then publish: the card names that file, its labels, and no SST-2."""
    from compression.hub import publish
    from compression.optimize import optimize
    from conftest import synthetic

    rows = synthetic(60, 41)
    data = tmp_path / "support_tickets.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    from compression.config import EvalConfig

    optimize(str(tiny_model), tmp_path / "out", ["fp32", "int8-dynamic"], eval_data=str(data), text_column="text",
             evaluation=EvalConfig(latency_runs=5, warmup=1, latency_sentences=3))
    result = publish(tmp_path / "out", NS, prefix="tickets", token=TOKEN, retry_delay=0.01)
    for repo_id in result["repos"].values():
        card = hub.blob(_files(hub, repo_id)["README.md"]).decode()
        meta = yaml.safe_load(card.split("---")[1])
        results = meta["model-index"][0]["results"][0]
        assert results["dataset"]["name"] == "support_tickets.csv" and "datasets" not in meta
        assert "SST-2" not in card and "glue" not in card.lower() and "sentiment-analysis" not in meta["tags"]
        assert "airline" not in card.lower() and "negative, positive" in card


def test_wait_http_says_when_the_app_died_instead_of_waiting_out_the_timeout():
    import subprocess
    import sys
    import time

    from conftest import free_port

    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    t0 = time.perf_counter()
    with pytest.raises(AssertionError, match="exited with 3 before"):
        wait_http(f"http://127.0.0.1:{free_port()}/", proc, seconds=60, poll_s=0.05)
    assert time.perf_counter() - t0 < 30
