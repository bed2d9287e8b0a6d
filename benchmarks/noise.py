"""Do a folder's variants drift from their teacher on user-text noise? Each variant as served, plain and noisy.

    python benchmarks/noise.py variants --json bench-out/noise.json
    python benchmarks/noise.py /tmp/variants-h4 pruned-fused-int8 tiny

Users' text carries what SST-2's phrases never do: @mentions, links, hashtags. This takes the student sweep's dev
slice (``teacher_sweep.dev_split``: 1,000 whole *training* sentences; never validation, never the out-of-domain
tweets), adds ``student_sweep.user_noise`` to each (an @mention in front 7 times in 10, a link or a hashtag behind 3
in 10 each: nothing that says anything about sentiment), and asks every variant for its answer one sentence at a
time, as the app does. Per variant it prints, plain and noisy, the share of the teacher's positive answers it gives
too ("positives kept"), the same for negatives, and their mean ("balanced agreement"). The reference is the
teacher's ONNX export (``fp32``) where the folder has one, else the PyTorch teacher. Reporting only: nothing is
chosen on it. (The dev slice's sentences may be among the teacher's training phrases: this measures agreement with
the teacher, not accuracy.)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from negation import saved_splits  # noqa: E402
from student_sweep import kept, user_noise  # noqa: E402
from teacher_sweep import dev_split  # noqa: E402

from compression.loader import load_runner  # noqa: E402
from compression.machine import cpu_flags, cpu_name  # noqa: E402


def answers(folder: Path, texts: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """The folder's argmax on each text of each set, one sentence at a time (what the app serves); opened once."""
    runner = load_runner(folder)
    return {k: torch.from_numpy(runner.served_logits(t).argmax(-1)) for k, t in texts.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants_dir", type=Path)
    ap.add_argument("variants", nargs="*", help="default: every built variant but the teacher and its fp32 export")
    ap.add_argument("--json")
    args = ap.parse_args()
    _, dev = dev_split(saved_splits(args.variants_dir)["train"])  # all of the training split, as the sweeps read it
    texts = {"plain": dev.texts, "noisy": user_noise(dev.texts)}
    ref = "fp32" if (args.variants_dir / "fp32" / "metrics.json").is_file() else "teacher"
    names = args.variants or sorted(p.parent.name for p in args.variants_dir.glob("*/metrics.json")
                                    if p.parent.name not in ("teacher", "fp32"))
    teacher = answers(args.variants_dir / ref, texts)
    print(f"{cpu_name()}; reference: {ref}, positive on {float(teacher['plain'].float().mean()):.3f} of {len(dev)} plain "
          f"training sentences, {float(teacher['noisy'].float().mean()):.3f} of them noisy")
    print("| variant | plain: positives / negatives kept, balanced | noisy: positives / negatives kept, balanced | Δ balanced, pt |")
    print("|---|---|---|---|")
    rows = []
    for name in names:
        row = {"variant": name, **{k: kept(pred, teacher[k]) for k, pred in answers(args.variants_dir / name, texts).items()}}
        rows.append(row)
        cell = lambda k: f"{row[k]['positives_kept']:.3f} / {row[k]['negatives_kept']:.3f}, {row[k]['balanced']:.3f}"
        print(f"| {name} | {cell('plain')} | {cell('noisy')} | {(row['noisy']['balanced'] - row['plain']['balanced']) * 100:+.1f} |",
              flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"folder": str(args.variants_dir), "cpu": cpu_name(), "cpu_flags": cpu_flags(),
                                               "reference": ref, "sentences": len(dev), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
