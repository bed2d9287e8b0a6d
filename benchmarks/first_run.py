"""Time a fresh `python app.py`: empty variants folder -> page answering -> demo family complete.

    python benchmarks/first_run.py --variants-dir /tmp/variants-demo --json bench-out/first_run.json

Prints, with the CPU named: seconds until the app's first HTTP 200 (the page, with the build's
progress on it), minutes until the build's progress file says the family is complete, the
demo teacher's SST-2 accuracy and every row. The folder must not exist (that is what a first run
means). CPU-seconds of the build process come from /proc while it runs. At the end the recommended
variant is asked ``--text`` ("not bad at all") and its answer printed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appserver import REPO, browser_page, free_port, wait_http  # noqa: E402

from compression import artifacts, progress  # noqa: E402
from compression.machine import cpu_flags, cpu_name  # noqa: E402


def _cpu_seconds(pid: int) -> float | None:
    """user + sys CPU-seconds of a process and its waited-for children, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(f) for f in fields[11:15]) / tick


def ask(variant: Path, text: str) -> dict:
    """The variant's label and confidence for one sentence, as the page's Classify gives it."""
    from compression.loader import load_runner
    from compression.metrics import softmax
    from compression.runtime import id2label

    runner = load_runner(variant, 1)
    probs = softmax(runner.forward(runner.encode([text])))[0]
    label = id2label(runner.config).get(int(probs.argmax()))
    return {"text": text, "label": label, "confidence": float(probs.max())}


def _screenshot(url: str, path: str) -> None:
    """The page as a user sees it while the build runs (Debian's Chromium through Playwright)."""
    with browser_page() as page:
        page.goto(url)
        page.wait_for_selector("#build-status", timeout=60000)
        page.get_by_role("tab", name="Compare").click()
        page.wait_for_timeout(4000)  # a poll or two: rows and the plot drawn
        page.screenshot(path=path, full_page=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants-dir", required=True)
    ap.add_argument("--json", default="bench-out/first_run.json")
    ap.add_argument("--timeout-min", type=float, default=40)
    ap.add_argument("--text", default="not bad at all", help="a sentence the recommended variant is asked at the end")
    ap.add_argument("--screenshot", help="save the page (Chromium) here during the first student's training (rows of the "
                                         "cheap variants on it; no latency is being measured then)")
    args = ap.parse_args()
    folder = Path(args.variants_dir).resolve()
    if folder.exists():
        raise SystemExit(f"{folder} exists; a first run starts from nothing")
    port = free_port()
    env = {**os.environ, "BCS_VARIANTS_DIR": str(folder), "PORT": str(port)}
    t0 = time.perf_counter()
    log = open(Path(args.json).with_suffix(".app.log"), "w") if Path(args.json).parent.is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    done_s = cpu_s = None
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc, seconds=600, poll_s=0.2)
        page_s = time.perf_counter() - t0  # from before the process started
        print(f"page answering after {page_s:.1f} s", flush=True)
        build_pid, shot = None, args.screenshot
        while time.perf_counter() - t0 < args.timeout_min * 60:
            state = progress.read(folder) or {}
            if shot and state.get("stage") not in (None, "teacher") and (state.get("steps_done") or 0) >= 100:
                _screenshot(f"http://127.0.0.1:{port}/", shot)
                print(f"screenshot of the page mid-build: {shot}", flush=True)
                shot = None
            build_pid = state.get("pid") or build_pid
            if build_pid:
                cpu_s = _cpu_seconds(build_pid) or cpu_s
            if state.get("state") in ("done", "failed", "stopped"):
                done_s = time.perf_counter() - t0
                print(f"build {state['state']} after {done_s / 60:.1f} min: {state.get('error') or ''}", flush=True)
                break
            time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    teacher = artifacts.read_metrics(folder / artifacts.TEACHER) or {}
    report = artifacts.read_json(folder / artifacts.REPORT) or {"rows": [], "recommended": None}
    out = {"machine": {"cpu": cpu_name(), "flags": cpu_flags(), "cores": os.cpu_count()}, "page_s": page_s,
           "complete_min": None if done_s is None else done_s / 60, "build_cpu_s": cpu_s,
           "teacher_accuracy": teacher.get("accuracy"), "recommended": report["recommended"],
           "rows": {r["variant"]: {k: r.get(k) for k in ("accuracy", "delta_accuracy", "delta_accuracy_ci95", "ood_accuracy",
                                                         "ood_balanced_accuracy", "latency_p50_ms", "size_mb")}
                    for r in report["rows"]}}
    if report["recommended"]:  # issue #17's demo check, as a user would type it on the page
        out["recommended_says"] = ask(folder / report["recommended"], args.text)
        print(f"{report['recommended']} on {args.text!r}: {out['recommended_says']['label']} "
              f"({out['recommended_says']['confidence']:.3f})")
    print(f"CPU: {out['machine']['cpu']} ({', '.join(out['machine']['flags'])}), {out['machine']['cores']} cores")
    print(f"fresh `python app.py`: page answering after {page_s:.1f} s (target <= 15 s); demo family complete after "
          f"{out['complete_min'] or float('nan'):.1f} min (target <= 10); build CPU {cpu_s or float('nan'):.0f} s; "
          f"teacher accuracy {teacher.get('accuracy', float('nan')):.4f} (target >= 0.88); recommended {report['recommended']}")
    print((folder / "report.md").read_text() if (folder / "report.md").is_file() else "(no report)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
