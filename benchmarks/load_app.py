"""Load benchmark for the app: N concurrent gradio_client callers x M requests each.

    python benchmarks/load_app.py --variants variants --callers 50 --requests 20

Starts app.py's demo in-process on 127.0.0.1 (queue concurrency 4), then fires
the callers at /classify; prints errors, p50/p95 request latency and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SENTENCES = ["a gripping , funny film .", "it never comes together .", "not bad at all , actually .",
             "the plot is thin but the performances are anything but .", "i did n't expect to hate it this much ."]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="variants")
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--json", default="bench-out/load_app.json")
    args = ap.parse_args()
    os.environ["BCS_VARIANTS_DIR"] = args.variants
    import app
    from gradio_client import Client

    app.demo.queue(default_concurrency_limit=4, max_size=2048).launch(prevent_thread_lock=True, server_port=7861, quiet=True)
    url = "http://127.0.0.1:7861/"

    def caller(i):
        client = Client(url, verbose=False)
        times, errors = [], 0
        for j in range(args.requests):
            t0 = time.perf_counter()
            try:
                table = client.predict(SENTENCES[(i + j) % len(SENTENCES)], None, api_name="/classify")[0]
                errors += len(table["data"]) != len(app.STUDIO.variants)
            except Exception:
                errors += 1
            times.append((time.perf_counter() - t0) * 1e3)
        return times, errors

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.callers) as pool:
        results = list(pool.map(caller, range(args.callers)))
    wall = time.perf_counter() - t0
    times = sorted(t for r in results for t in r[0])
    out = {
        "callers": args.callers, "requests_each": args.requests, "total": len(times),
        "errors": sum(r[1] for r in results), "wall_s": round(wall, 1), "requests_per_s": round(len(times) / wall, 1),
        "p50_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "variants": len(app.STUDIO.variants), "cpu_count": os.cpu_count(),
    }
    print("| callers x requests | errors | p50 ms | p95 ms | req/s | variants per request |\n|---|---|---|---|---|---|")
    print(f"| {args.callers} x {args.requests} | {out['errors']} | {out['p50_ms']} | {out['p95_ms']} | {out['requests_per_s']} | {out['variants']} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    app.demo.close()
    return 0 if out["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
