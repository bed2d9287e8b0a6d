"""Report over all rows: Markdown, CSV, Pareto plot, recommended variant.

The Pareto front is over (accuracy up, p50 latency down, size down). The
recommended variant is picked *from the front* among deployable (ONNX) rows whose accuracy
is within ``tolerance`` of the teacher's (accuracy points, or a fraction of the teacher's
accuracy: ``criterion``, see ``allowed_loss``): first those with the edge this project exists for,
at least ``EDGE_SPEED``x the speed of Optimum's int8 route (the fastest ``export`` +
``quantize_dynamic`` row) at most ``EDGE_SIZE`` of its size; among them, or among all close
rows when none has it, the fastest (then the smallest). None close: the most accurate. PyTorch rows (teacher, torch-int8) are references,
never recommended. Every row carries its difference to the teacher on the same sentences
with a 95% paired-bootstrap interval; a row whose whole interval lies more than that allowed loss below zero
is marked significantly worse than the tolerance allows.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from .artifacts import FORMAT_ONNX, REPORT, SERVABLE, TEACHER, load_rows
from .config import CRITERIA, EvalConfig
from .errors import BuildError

log = logging.getLogger(__name__)
COLUMNS = [
    ("variant", "variant", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("f1", "F1", "{:.4f}"),
    ("loss", "loss", "{:.4f}"),
    ("agreement", "agree w/ teacher", "{:.4f}"),
    ("delta_accuracy", "Δ vs teacher [95% CI], pt", None),
    ("flips_lost", "flips −/+", None),
    ("ood_accuracy", "OOD acc", "{:.4f}"),
    ("ood_balanced_accuracy", "OOD bal. acc", "{:.4f}"),
    ("latency_p50_ms", "p50 ms", "{:.2f}"),
    ("latency_p95_ms", "p95 ms", "{:.2f}"),
    ("throughput_per_s", "batch-32 sent/s", "{:.0f}"),
    ("size_mb", "size MB", "{:.2f}"),
    ("gzip_mb", "gzip MB", "{:.2f}"),
    ("params", "params", "{:,}"),
    ("sparsity", "sparsity", "{:.3f}"),
    ("format", "format", "{}"),
]


def dominates(a: dict, b: dict) -> bool:
    ge = a["accuracy"] >= b["accuracy"] and a["latency_p50_ms"] <= b["latency_p50_ms"] and a["size_mb"] <= b["size_mb"]
    gt = a["accuracy"] > b["accuracy"] or a["latency_p50_ms"] < b["latency_p50_ms"] or a["size_mb"] < b["size_mb"]
    return ge and gt


def pareto_front(rows: list[dict]) -> list[str]:
    return [r["variant"] for r in rows if not any(dominates(o, r) for o in rows if o is not r)]


SPEED_TIE = 1.05  # p50 latencies within 5% are run-to-run noise on a shared CPU: the smaller file wins
OPTIMUM_ROUTE = ["export", "quantize_dynamic"]  # the steps of Optimum's own int8 route (ORTQuantizer, dynamic)
EDGE_SPEED, EDGE_SIZE = 2.0, 0.5  # a row this much faster and smaller than that route wins over a merely faster one


def optimum_route(rows: list[dict]) -> dict | None:
    """The fastest row made by Optimum's own int8 route, or None (a family without one)."""
    route = [r for r in rows if r.get("steps") == OPTIMUM_ROUTE]
    return min(route, key=lambda r: r["latency_p50_ms"]) if route else None


def has_edge(row: dict, route: dict | None) -> bool:
    """At least EDGE_SPEED x the route's batch-1 speed at no more than EDGE_SIZE of its size."""
    return (route is not None and row is not route and row["latency_p50_ms"] * EDGE_SPEED <= route["latency_p50_ms"]
            and row["size_mb"] <= EDGE_SIZE * route["size_mb"])


def allowed_loss(teacher_accuracy: float | None, tolerance: float, criterion: str = "absolute") -> float:
    """The accuracy (a fraction, 0.01 = one point) a row may lose to the teacher: ``tolerance`` itself
    ("absolute"), or that share of the teacher's accuracy ("relative": 0.01 keeps 99% of it, the bar of
    Intel Neural Compressor's default criterion and of issue #17's full family)."""
    if criterion == "relative":
        return tolerance * (teacher_accuracy or 0.0)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be {' or '.join(CRITERIA)}, got {criterion!r}")
    return tolerance


def accuracy_rule(recipe: dict | None) -> tuple[float, str]:
    """A saved recipe's (recommend_tolerance, recommend_criterion), checked by ``EvalConfig`` itself;
    a hand-edited value it rejects gives the default rule and a warning: a Space or a card still works."""
    ev = (recipe or {}).get("evaluation") or {}
    try:
        cfg = EvalConfig(recommend_tolerance=float(ev.get("recommend_tolerance", EvalConfig.recommend_tolerance)),
                         recommend_criterion=str(ev.get("recommend_criterion", EvalConfig.recommend_criterion)))
    except (TypeError, ValueError) as exc:
        log.warning("recommendation rule in the saved recipe is not understood (%s); using the default", exc)
        cfg = EvalConfig()
    return cfg.recommend_tolerance, cfg.recommend_criterion


def keeps_accuracy(accuracy: float, teacher_accuracy: float, tolerance: float = 0.01, criterion: str = "absolute") -> bool:
    """``accuracy`` loses no more than ``allowed_loss`` to the teacher's; a row exactly on the bar (792 of
    872 sentences against 800 is 99.0%) counts as keeping it, whatever the float rounding."""
    return accuracy >= teacher_accuracy - allowed_loss(teacher_accuracy, tolerance, criterion) - 1e-12


def tolerance_text(tolerance: float, criterion: str = "absolute", teacher_accuracy: float | None = None) -> str:
    """How reports and cards state the rule, after "whose accuracy is": "within 1.0 points of the
    teacher's", or "at least 99% of the teacher's (within 0.88 points)"."""
    if criterion == "relative":
        points = f" (within {allowed_loss(teacher_accuracy, tolerance, criterion) * 100:.2f} points)" if teacher_accuracy else ""
        return f"at least {100 - tolerance * 100:g}% of the teacher's{points}"
    return f"within {tolerance * 100:.1f} points of the teacher's"


def significantly_worse(row: dict, loss: float) -> bool:
    """The whole 95% interval of the difference to the teacher lies below -loss (``allowed_loss``)."""
    ci = row.get("delta_accuracy_ci95")
    return bool(ci) and ci[1] < -loss


def delta_text(row: dict) -> str:
    """"−0.57 [−1.38, +0.23]" in accuracy points, or "" for rows measured without a teacher."""
    if row.get("delta_accuracy") is None:
        return ""
    ci = row.get("delta_accuracy_ci95")
    text = f"{row['delta_accuracy'] * 100:+.2f}"
    return text + (f" [{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]" if ci else "")


def recommend(rows: list[dict], teacher_accuracy: float | None, tolerance: float = 0.01,
              criterion: str = "absolute") -> str | None:
    """The fastest servable front row whose accuracy is within ``allowed_loss`` of the teacher's (a
    point estimate: the interval is shown beside it), ties within 5% going to the smaller file; rows
    with the edge over Optimum's int8 route (``has_edge``) first, where any has it."""
    front = set(pareto_front(rows))
    candidates = [r for r in rows if r["variant"] in front and r.get("format", FORMAT_ONNX) in SERVABLE and r["variant"] != TEACHER]
    if not candidates:
        return None
    if teacher_accuracy is not None:
        close = [r for r in candidates if keeps_accuracy(r["accuracy"], teacher_accuracy, tolerance, criterion)]
        route = optimum_route(rows)
        close = [r for r in close if has_edge(r, route)] or close
        if close:
            fastest = min(r["latency_p50_ms"] for r in close)
            tied = [r for r in close if r["latency_p50_ms"] <= fastest * SPEED_TIE]
            return min(tied, key=lambda r: (r["size_mb"], r["latency_p50_ms"]))["variant"]
    return max(candidates, key=lambda r: r["accuracy"])["variant"]


def _fmt(row, key, fmt):
    if key == "delta_accuracy":
        return delta_text(row)
    if key == "flips_lost":
        return "" if row.get("flips_lost") is None else f"{row['flips_lost']} / {row['flips_gained']}"
    value = row.get(key)
    return "" if value is None else fmt.format(value)


def write_report(out_dir: Path, tolerance: float = 0.01, criterion: str = "absolute") -> dict:
    """Write report.md, report.csv, pareto.png; returns a summary dict."""
    out_dir = Path(out_dir)
    rows = load_rows(out_dir)
    if not rows:
        raise BuildError(f"{out_dir}: no measured variants (metrics.json); build first")
    teacher = next((r for r in rows if r["variant"] == TEACHER), None)
    front = pareto_front(rows)
    teacher_accuracy = teacher["accuracy"] if teacher else None
    best = recommend(rows, teacher_accuracy, tolerance, criterion)
    loss = allowed_loss(teacher_accuracy, tolerance, criterion)
    rule = tolerance_text(tolerance, criterion, teacher_accuracy)
    route = optimum_route(rows)
    for r in rows:
        r["edge_over_optimum_int8"] = has_edge(r, route)
        r["pareto"] = r["variant"] in front
        r["recommended"] = r["variant"] == best
        r["significantly_worse"] = significantly_worse(r, loss)
        if teacher:
            r["size_ratio_vs_teacher"] = teacher["size_mb"] / r["size_mb"]
            r["speedup_vs_teacher"] = teacher["latency_p50_ms"] / r["latency_p50_ms"]

    edge = [r["variant"] for r in rows if r["edge_over_optimum_int8"]]
    edge_note = (f" (here: {', '.join(edge)}, against {route['variant']})" if edge else
                 f" (none here, against {route['variant']})" if route else " (no such route in this family)")
    keys = [k for k, _, _ in COLUMNS] + ["delta_accuracy_ci95", "flips_gained", "pareto", "recommended", "significantly_worse",
                                         "edge_over_optimum_int8",
                                         "size_ratio_vs_teacher", "speedup_vs_teacher"]
    with (out_dir / "report.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    header = [h for _, h, _ in COLUMNS] + ["× smaller", "× faster", "Pareto"]
    lines = [
        f"# Evaluation report: {out_dir.name}",
        "",
        f"Measured on {rows[0].get('cpu', '?')} ({', '.join(rows[0].get('cpu_flags') or []) or 'no AVX2'}) with "
        f"{rows[0].get('threads', '?')} thread(s); {rows[0].get('eval_samples', '?')} evaluation sentences "
        f"({rows[0].get('eval_data', '?')}). **Accuracy is measured as the model is served**: each sentence on its own "
        "(batch 1) for graphs whose int8 activation scales depend on the batch (dynamic quantization), and in unpadded "
        "batches of equal-length sentences, which give the same answers, for the others. Latency is batch 1, model only "
        "(tokenization excluded), after warm-up; throughput is padded batches of 32. Ratios are against the PyTorch fp32 "
        "teacher. **Δ vs teacher** is this row's accuracy minus the teacher's on the same sentences, in points, with a "
        "95% interval from a paired bootstrap over sentences (fixed seed); **flips −/+** count the sentences the teacher "
        "gets right and this row wrong, and the reverse."
        + (f" OOD: accuracy and balanced accuracy on {rows[0]['ood_samples']} out-of-domain sentences, never trained on."
           if rows[0].get("ood_samples") else ""),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        cells = [_fmt(r, k, f) for k, _, f in COLUMNS]
        cells[0] = f"**{r['variant']}** (recommended)" if r["recommended"] else r["variant"]
        if r["significantly_worse"]:
            cells[0] += " ↓"
        cells += [_fmt(r, "size_ratio_vs_teacher", "{:.1f}"), _fmt(r, "speedup_vs_teacher", "{:.1f}"), "✓" if r["pareto"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Pareto front (accuracy ↑, p50 latency ↓, size ↓): {', '.join(front)}.",
        f"Recommended: **{best}** — the fastest ONNX variant on the front whose accuracy is {rule}, "
        f"as a point estimate (latencies within 5% count as a tie, won by the smaller file), "
        f"taken first from those at least {EDGE_SPEED:g}× as fast as Optimum's int8 route at most {EDGE_SIZE:g}× its size "
        f"where any is{edge_note}; else the most accurate ONNX variant on the front. ↓ marks rows whose whole 95% interval lies more than "
        f"{loss * 100:.2f} points below the teacher: significantly worse than the tolerance allows.",
        "",
        "Sparsity only shrinks the gzip column: a dense ONNX graph runs zeros as fast as any other weight.",
        "",
        "![Pareto plot](pareto.png)",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
    plot_pareto(rows, out_dir / "pareto.png")
    summary = {"rows": rows, "pareto": front, "recommended": best,
               "recommend_rule": {"tolerance": tolerance, "criterion": criterion, "allowed_loss": loss}}
    (out_dir / REPORT).write_text(json.dumps(summary, indent=2))
    log.info("report written to %s (recommended: %s)", out_dir / "report.md", best)
    return summary


def plot_pareto(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        color = "tab:red" if r.get("recommended") else ("tab:blue" if r.get("pareto") else "tab:gray")
        ax.scatter(r["latency_p50_ms"], r["accuracy"] * 100, s=20 + 4 * r["size_mb"], color=color, alpha=0.6)
        ax.annotate(r["variant"], (r["latency_p50_ms"], r["accuracy"] * 100), fontsize=8, xytext=(4, 4), textcoords="offset points")
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["latency_p50_ms"])
    ax.plot([r["latency_p50_ms"] for r in front], [r["accuracy"] * 100 for r in front], "--", color="tab:blue", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 p50 latency (ms, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs latency (marker area ∝ size; red = recommended, blue = Pareto front)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
