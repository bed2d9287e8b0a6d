"""The hosted-Space path, measured: publish variants to a local Hub-protocol server, deploy
the Space, download it, start its app.py without torch, then time it.

    python benchmarks/space.py --variants-dir variants-full \
        --only fp32 fp16 int8-dynamic int8-static int8-emb4 w4 distilled-L3-int8 distilled-L2-vocab-int8 \
               pruned-heads-ffn-int8 pruned-heads-ffn-vocab-int8-emb4 narrow-L2-vocab-int8-emb4 tiny \
        --json bench-out/space.json

Prints a table and writes JSON with the CPU named:
- cold start: process start -> first HTTP 200 of the Space app (downloads from the local Hub included);
- one text through every variant: in-process ``serving.predict`` time (the server's work) and the
  gradio_client round trip, p50/p95 over 100 sentences;
- load: N concurrent gradio_client callers x M requests to /classify: errors, p50/p95, requests/s.
Everything talks to 127.0.0.1 only. The Hub server is the one the tests use (tests/hub_server.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKEN, NS = "hf_benchmark_token", "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hub_module():
    spec = importlib.util.spec_from_file_location("hub_server", REPO / "tests" / "hub_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants-dir", default="variants")
    ap.add_argument("--only", nargs="+", help="variants to publish (default: every publishable one)")
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a load-test request counts as an error")
    ap.add_argument("--json", default="bench-out/space.json")
    args = ap.parse_args()

    work_root = Path(tempfile.mkdtemp(prefix="bcs-space-bench-"))
    port = _free_port()
    # the Hub client reads its endpoint at import: set it before anything imports huggingface_hub
    os.environ.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_DISABLE_XET="1", HF_HUB_CACHE=str(work_root / "cache"),
                      HF_HUB_DISABLE_TELEMETRY="1")
    hub_server = _hub_module()
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
    from compression.metrics import cpu_flags, cpu_name

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

    app_port = _free_port()
    t0 = time.perf_counter()
    proc = hub_server.start_space(folder, work_root, app_port)
    try:
        hub_server.wait_http(f"http://127.0.0.1:{app_port}/", proc, seconds=600)
        cold_s = time.perf_counter() - t0
        url = f"http://127.0.0.1:{app_port}/"
        texts = [line.split("\t")[0] for line in (REPO.parent / "shared/data/sst2/validation.tsv").read_text().splitlines()[1:101]]
        client = Client(url, verbose=False)
        served = len(client.predict(texts[0], None, api_name="/classify")[0]["data"])
        round_trip = []
        for t in texts:
            t1 = time.perf_counter()
            client.predict(t, None, api_name="/classify")
            round_trip.append((time.perf_counter() - t1) * 1e3)

        def caller(i):
            c, times, errors = Client(url, verbose=False), [], 0
            for j in range(args.requests):
                t1 = time.perf_counter()
                try:
                    c.submit(texts[(i + j) % len(texts)], None, api_name="/classify").result(timeout=args.timeout)
                    times.append((time.perf_counter() - t1) * 1e3)
                except Exception:  # an error or no answer within --timeout
                    errors += 1
            return times, errors

        t1 = time.perf_counter()
        with ThreadPoolExecutor(args.callers) as pool:
            results = list(pool.map(caller, range(args.callers)))
        load_s = time.perf_counter() - t1
        load = [x for times, _ in results for x in times] or [float("nan")]
        errors = sum(e for _, e in results)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)

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
        "load": {"callers": args.callers, "requests": args.requests, "errors": errors, "p50_ms": statistics.median(load),
                 "p95_ms": pct(load, 95), "requests_per_s": len(load_ok) / load_s, "timeout_s": args.timeout},
    }
    print(f"CPU: {out['machine']['cpu']} ({', '.join(out['machine']['flags'])}), {out['machine']['cores']} cores; "
          f"{served} variants served, {out['rows']} rows published\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| cold start of the Space app (local Hub) | {cold_s:.1f} s | <= 15 s |")
    print(f"| one text through {served} variants, server time p50 / p95 | {out['predict_server_ms']['p50']:.1f} / "
          f"{out['predict_server_ms']['p95']:.1f} ms | p50 <= 50 ms |")
    print(f"| same, gradio_client round trip p50 / p95 | {out['predict_round_trip_ms']['p50']:.1f} / "
          f"{out['predict_round_trip_ms']['p95']:.1f} ms | |")
    print(f"| {args.callers} callers x {args.requests} requests: errors, p50 / p95, req/s | {errors}, "
          f"{out['load']['p50_ms']:.0f} / {out['load']['p95_ms']:.0f} ms, {out['load']['requests_per_s']:.1f} | "
          "0 errors, p95 <= 2 s |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"\nwritten: {args.json}")
    shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
