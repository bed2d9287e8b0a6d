"""Does the app's live latency rank variants as the build measured them?

    python benchmarks/live_latency.py --variants-dir variants --requests 20 --json bench-out/live_latency.json

Starts app.py over a finished build folder (no build), sends ``--requests`` one-sentence requests to
/classify through gradio_client, one after another (the evaluation sentences the build timed, in
order), and compares each variant's live median (``live_ms``: the app's warm timer, each variant
timed alone on one thread between requests, see ``serving.sample_warm``) with its build p50; beside it
the median of each request's own run (``latency_ms``, each variant run once between the others).
After the app stops, each variant's p50 is measured again the way the build measures it
(``metrics.latency``: the same sentences, warm-up and runs, one variant at a time in this process), so
the live figures can also be read against a reference taken in the same run: a build's p50s were taken
minutes or days earlier, and on a shared VM the same file's p50 moves by up to 40% between moments. Prints the table, the pairs whose build p50s
differ by more than 20% and whether they keep their order live, and the server time per request;
writes JSON with the CPU named.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appserver import app_over, latency_texts  # noqa: E402

from compression.machine import cpu_flags, cpu_name  # noqa: E402

WITHIN, ORDER_GAP = 0.25, 0.20


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants-dir", default="variants")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--json", default="bench-out/live_latency.json")
    args = ap.parse_args()
    folder = Path(args.variants_dir).resolve()
    texts, recipe = latency_texts(folder)
    with open(Path(args.json).with_suffix(".app.log"), "w") as log, app_over(folder, log) as url:
        from gradio_client import Client

        client = Client(url, verbose=False)
        rows, wall, own = None, [], {}
        for i in range(args.requests):
            t0 = time.perf_counter()
            table = client.predict(texts[i % len(texts)], None, api_name="/classify")[0]
            wall.append((time.perf_counter() - t0) * 1e3)
            rows = [dict(zip(table["headers"], r)) for r in table["data"]]
            for r in rows:
                r["variant"] = r["variant"].removeprefix("★ ")  # the recommended row's name carries a star on the page
                own.setdefault(r["variant"], []).append(r["latency_ms"])
    from compression import serving
    from compression.metrics import latency

    family = serving.load_family(folder)  # the build's measurement again, now, same sentences and settings
    now = {name: latency(v.runner, texts, recipe.evaluation)["latency_p50_ms"] for name, v in family.variants.items()}
    out = []
    for r in rows:
        ratio = r["live_ms"] / r["build_p50_ms"]
        out.append({"variant": r["variant"], "build_p50_ms": r["build_p50_ms"], "live_median_ms": r["live_ms"],
                    "ratio": ratio, "within_25pct": abs(ratio - 1) <= WITHIN,
                    "request_median_ms": statistics.median(own[r["variant"]]), "p50_now_ms": now[r["variant"]],
                    "ratio_now": r["live_ms"] / now[r["variant"]]})
    pairs = []
    for a in out:
        for b in out:
            if a["build_p50_ms"] > (1 + ORDER_GAP) * b["build_p50_ms"]:
                pairs.append({"slower": a["variant"], "faster": b["variant"], "same_order_live": a["live_median_ms"] > b["live_median_ms"]})
    model_ms = sum(r["latency_ms"] for r in rows)
    machine = {"cpu": cpu_name(), "flags": cpu_flags()}
    print(f"CPU: {machine['cpu']} ({', '.join(machine['flags'])}); {args.requests} requests, one at a time\n")
    print("| variant | build p50 ms | live median ms | live / build | within 25% | request's own run, median ms (/ build) "
          "| p50 re-measured after, ms | live / re-measured |\n|---|---|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['variant']} | {r['build_p50_ms']:.2f} | {r['live_median_ms']:.2f} | {r['ratio']:.2f} | "
              f"{'yes' if r['within_25pct'] else 'NO'} | {r['request_median_ms']:.2f} ({r['request_median_ms'] / r['build_p50_ms']:.2f}) "
              f"| {r['p50_now_ms']:.2f} | {r['ratio_now']:.2f} |")
    kept = sum(p["same_order_live"] for p in pairs)
    print(f"\npairs whose build p50s differ by > 20%: {len(pairs)}; same order live: {kept}")
    for p in pairs:
        if not p["same_order_live"]:
            print(f"  out of order: {p['slower']} vs {p['faster']}")
    print(f"model time of the last request (all variants, one after another): {model_ms:.1f} ms; "
          f"client round trip median {sorted(wall)[len(wall) // 2]:.1f} ms")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine, "rows": out, "pairs": pairs, "last_request_model_ms": model_ms,
                                           "round_trip_ms": wall}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
