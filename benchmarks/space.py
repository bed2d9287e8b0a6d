"""The hosted-Space path, measured: publish variants to a local Hub-protocol server, deploy
the Space, download it, start its app.py without torch, then time it.

    python benchmarks/space.py --variants-dir variants-full \
        --only fp32 fp16 int8-dynamic int8-static int8-emb4 w4 fused-int8 distilled-L3-int8 distilled-L3-vocab-int8-emb4 \
               pruned-fused-int8 pruned-fused-vocab-int8-emb4 tiny \
        --json bench-out/space.json
    python benchmarks/space.py --variants-dir variants --screenshot /tmp/space.png   # and look at the Space as a visitor

Prints a table and writes JSON with the CPU named:
- cold start: process start -> first HTTP 200 of the Space app (downloads from the local Hub included);
- one text through every variant: in-process ``serving.predict`` time (the server's work) and the
  gradio_client round trip, p50/p95 over 100 sentences;
- load: N concurrent callers x M requests to /classify: errors, p50/p95, requests/s. The callers
  speak Gradio's own HTTP API (POST /gradio_api/call/classify, then read the event stream) from
  one asyncio loop, so the load generator costs little CPU: on the 2 cores it shares with the
  server, 50 threaded gradio_client callers burned ~95 ms of client CPU per request, more than the
  server's own work, and measured the client instead of the Space. ``--load-client gradio_client``
  runs that path anyway.
Everything talks to 127.0.0.1 only. The Hub server is the one the tests use (compression/hubserver.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appserver import REPO, browser_page, click_classify, free_port, open_with_text  # noqa: E402
TOKEN, NS = "hf_benchmark_token", "bench"


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def _http_load(url: str, texts: list[str], callers: int, requests: int, timeout: float) -> list[tuple[list[float], int]]:
    """Each caller sends its requests one after another through Gradio's HTTP API."""
    import asyncio

    import httpx

    async def one(client, text) -> None:
        r = await client.post(f"{url}gradio_api/call/classify", json={"data": [text, None]})
        r.raise_for_status()
        event_id = r.json()["event_id"]
        async with client.stream("GET", f"{url}gradio_api/call/classify/{event_id}") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: "):].strip()
                    if kind == "complete":
                        return
                    if kind == "error":
                        raise RuntimeError("the app answered with an error event")
        raise RuntimeError("event stream closed without a result")

    async def caller(client, i):
        times, errors = [], 0
        for j in range(requests):
            t1 = time.perf_counter()
            try:
                await asyncio.wait_for(one(client, texts[(i + j) % len(texts)]), timeout)
                times.append((time.perf_counter() - t1) * 1e3)
            except Exception:  # an error or no answer within --timeout
                errors += 1
        return times, errors

    limits = httpx.Limits(max_connections=2 * callers, max_keepalive_connections=2 * callers)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        return await asyncio.gather(*(caller(client, i) for i in range(callers)))


def _gradio_client_load(url: str, texts: list[str], callers: int, requests: int, timeout: float):
    from gradio_client import Client

    def caller(i):
        c, times, errors = Client(url, verbose=False), [], 0
        for j in range(requests):
            t1 = time.perf_counter()
            try:
                c.submit(texts[(i + j) % len(texts)], None, api_name="/classify").result(timeout=timeout)
                times.append((time.perf_counter() - t1) * 1e3)
            except Exception:  # an error or no answer within --timeout
                errors += 1
        return times, errors

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(caller, range(callers)))


def space_screenshot(url: str, text: str, path: str) -> None:
    """The Space's page as a visitor sees it after classifying ``text`` (the quality bar's "look again")."""
    with browser_page() as page:
        open_with_text(page, url, text)
        try:
            click_classify(page)
            page.wait_for_timeout(3000)  # let the bar charts draw
        finally:  # a page that never answered is what to look at too
            page.screenshot(path=path, full_page=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants-dir", default="variants")
    ap.add_argument("--only", nargs="+", help="variants to publish (default: every publishable one)")
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a load-test request counts as an error")
    ap.add_argument("--load-client", choices=["http", "gradio_client"], default="http",
                    help="how the load test calls the app (see the module docstring)")
    ap.add_argument("--json", default="bench-out/space.json")
    ap.add_argument("--screenshot", help="also save a PNG of the Space's page (Debian's Chromium) after it classified --text")
    ap.add_argument("--text", default="not bad at all", help="what --screenshot types")
    args = ap.parse_args()

    work_root = Path(tempfile.mkdtemp(prefix="bcs-space-bench-"))
    port = free_port()
    # the Hub client reads its endpoint at import: set it before anything imports huggingface_hub
    os.environ.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_DISABLE_XET="1", HF_HUB_CACHE=str(work_root / "cache"),
                      HF_HUB_DISABLE_TELEMETRY="1")
    from compression import hubserver as hub_server
    from http.server import ThreadingHTTPServer

    (work_root / "hub").mkdir()
    state = hub_server.HubState(work_root / "hub", {TOKEN: {NS}})
    server = ThreadingHTTPServer(("127.0.0.1", port), type("H", (hub_server.Handler,), {"state": state}))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    from gradio_client import Client
    from huggingface_hub import snapshot_download

    from compression import artifacts, serving
    from compression.hub import publish, publish_space
    from compression.machine import cpu_flags, cpu_name

    src = Path(args.variants_dir)
    work = work_root / "variants"
    work.mkdir()
    for item in (artifacts.REPORT, artifacts.RECIPE):
        shutil.copy(src / item, work / item)
    names = [artifacts.TEACHER] + (args.only or [f.name for f in artifacts.list_variants(src, teacher=False)])
    for name in names:
        shutil.copytree(src / name, work / name)
    t0 = time.perf_counter()
    result = publish(work, NS, prefix="bench", token=TOKEN, retry_delay=0.01)
    publish_s = time.perf_counter() - t0
    space = publish_space(NS, list(result["repos"].values()), name="bench-space", token=TOKEN)
    folder = Path(snapshot_download(space, repo_type="space", local_dir=work_root / "space"))

    app_port = free_port()
    t0 = time.perf_counter()
    proc = hub_server.start_space(folder, work_root, app_port)
    try:
        hub_server.wait_http(f"http://127.0.0.1:{app_port}/", proc, seconds=600)
        cold_s = time.perf_counter() - t0
        url = f"http://127.0.0.1:{app_port}/"
        if args.screenshot:
            space_screenshot(url, args.text, args.screenshot)
        texts = [line.split("\t")[0] for line in (REPO.parent / "shared/data/sst2/validation.tsv").read_text().splitlines()[1:101]]
        client = Client(url, verbose=False)
        served = len(client.predict(texts[0], None, api_name="/classify")[0]["data"])
        round_trip = []
        for t in texts:
            t1 = time.perf_counter()
            client.predict(t, None, api_name="/classify")
            round_trip.append((time.perf_counter() - t1) * 1e3)

        t1 = time.perf_counter()
        if args.load_client == "http":
            import asyncio

            results = asyncio.run(_http_load(url, texts, args.callers, args.requests, args.timeout))
        else:
            results = _gradio_client_load(url, texts, args.callers, args.requests, args.timeout)
        load_s = time.perf_counter() - t1
        load = [x for times, _ in results for x in times] or [float("nan")]
        errors = sum(e for _, e in results)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        app_log = hub_server.space_output(proc)

    # the server's own work for one request, in this process, on the same downloaded repos
    family = serving.load_family(repo_ids=list(result["repos"].values()))
    server = []
    for t in texts:
        t1 = time.perf_counter()
        serving.predict(family, t)
        server.append((time.perf_counter() - t1) * 1e3)

    load_ok = [x for x in load if x == x]
    out = {
        "machine": {"cpu": cpu_name(), "flags": cpu_flags(), "cores": os.cpu_count()},
        "variants_served": served, "rows": len(result["repos"]), "publish_s": publish_s, "cold_start_s": cold_s,
        "predict_server_ms": {"p50": statistics.median(server), "p95": pct(server, 95)},
        "predict_round_trip_ms": {"p50": statistics.median(round_trip), "p95": pct(round_trip, 95)},
        "app_log": {"lines": app_log.count("\n"), "tracebacks": app_log.count("Traceback"), "tail": app_log[-2000:]},
        "load": {"callers": args.callers, "requests": args.requests, "errors": errors, "p50_ms": statistics.median(load),
                 "p95_ms": pct(load, 95), "requests_per_s": len(load_ok) / load_s, "timeout_s": args.timeout,
                 "client": args.load_client},
    }
    print(f"CPU: {out['machine']['cpu']} ({', '.join(out['machine']['flags'])}), {out['machine']['cores']} cores; "
          f"{served} variants served, {out['rows']} rows published\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| cold start of the Space app (local Hub) | {cold_s:.1f} s | <= 15 s |")
    print(f"| one text through {served} variants, server time p50 / p95 | {out['predict_server_ms']['p50']:.1f} / "
          f"{out['predict_server_ms']['p95']:.1f} ms | p50 <= 50 ms |")
    print(f"| same, gradio_client round trip p50 / p95 | {out['predict_round_trip_ms']['p50']:.1f} / "
          f"{out['predict_round_trip_ms']['p95']:.1f} ms | |")
    print(f"| {args.callers} callers ({args.load_client}) x {args.requests} requests: errors, p50 / p95, req/s | {errors}, "
          f"{out['load']['p50_ms']:.0f} / {out['load']['p95_ms']:.0f} ms, {out['load']['requests_per_s']:.1f} | "
          "0 errors, p95 <= 2 s |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"\nwritten: {args.json}")
    shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
