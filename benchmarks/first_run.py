"""Time a fresh `python app.py`: empty variants folder -> demo recipe built -> app answering.

    python benchmarks/first_run.py --variants-dir /tmp/variants-demo --json bench-out/first_run.json

Prints the wall time until the app's first HTTP 200 and the demo teacher's SST-2 accuracy,
with the CPU named. The folder must not exist (that is what a first run means).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from compression import artifacts
from compression.machine import cpu_flags, cpu_name

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants-dir", required=True)
    ap.add_argument("--json", default="bench-out/first_run.json")
    args = ap.parse_args()
    folder = Path(args.variants_dir).resolve()
    if folder.exists():
        raise SystemExit(f"{folder} exists; a first run starts from nothing")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "BCS_VARIANTS_DIR": str(folder), "PORT": str(port)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"app.py exited with {proc.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                time.sleep(1)
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    teacher = artifacts.read_metrics(folder / artifacts.TEACHER)
    report = artifacts.read_json(folder / artifacts.REPORT)
    out = {"machine": {"cpu": cpu_name(), "flags": cpu_flags(), "cores": os.cpu_count()}, "wall_s": wall,
           "teacher_accuracy": teacher["accuracy"], "recommended": report["recommended"],
           "rows": {r["variant"]: {k: r.get(k) for k in ("accuracy", "ood_balanced_accuracy", "latency_p50_ms", "size_mb")}
                    for r in report["rows"]}}
    print(f"CPU: {out['machine']['cpu']} ({', '.join(out['machine']['flags'])}), {out['machine']['cores']} cores")
    print(f"fresh `python app.py` -> app answering: {wall / 60:.1f} min (target <= 10); "
          f"teacher accuracy {teacher['accuracy']:.4f} (target >= 0.88); recommended {report['recommended']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
