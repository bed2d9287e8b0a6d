"""Metrics and the Pareto/recommendation logic on hand-made numbers."""
import math

import numpy as np

from compression.metrics import quality
from compression.report import dominates, pareto_front, recommend


def test_quality_matches_hand_computation():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]], np.float32)
    labels = [0, 1, 1, 1]
    q = quality(logits, labels, reference=np.array([0, 1, 1, 0]))
    assert q["accuracy"] == 0.75
    # positive class: tp=2, predicted=2, actual=3 -> F1 = 4/5
    assert math.isclose(q["f1"], 0.8)
    expected_loss = np.mean([
        -math.log(math.exp(2) / (math.exp(2) + 1)),
        -math.log(math.exp(1) / (1 + math.exp(1))),
        -math.log(1 / (math.exp(1) + 1)),
        -math.log(math.exp(3) / (1 + math.exp(3))),
    ])
    assert math.isclose(q["loss"], expected_loss, rel_tol=1e-5)
    assert q["agreement"] == 0.5


def _row(name, acc, ms, mb):
    return {"variant": name, "accuracy": acc, "latency_p50_ms": ms, "size_mb": mb}


def test_pareto_front_and_recommendation():
    rows = [
        _row("teacher", 0.90, 20, 90),
        _row("fp32", 0.90, 10, 90),       # dominates teacher (same acc, faster, same size)
        _row("int8", 0.895, 3, 23),
        _row("worse-int8", 0.89, 4, 24),  # dominated by int8
        _row("tiny", 0.85, 1, 4),
    ]
    assert dominates(rows[1], rows[0]) and not dominates(rows[0], rows[1])
    front = pareto_front(rows)
    assert set(front) == {"fp32", "int8", "tiny"}
    assert recommend(rows, 0.90, tolerance=0.01) == "int8"      # fastest within 1 point
    assert recommend(rows, 0.90, tolerance=0.10) == "tiny"
    assert recommend(rows, 0.99, tolerance=0.01) == "fp32"      # none close: most accurate on the front
    assert recommend([_row("teacher", 0.9, 1, 1)], 0.9) is None


def test_speed_ties_go_to_the_smaller_file():
    rows = [_row("teacher", 0.90, 10, 90), _row("a", 0.899, 2.00, 18), _row("a-4bit", 0.899, 2.05, 12),
            _row("slow-small", 0.899, 4.0, 5)]
    rows[0]["format"] = "pytorch"
    assert recommend(rows, 0.90) == "a-4bit"     # 2.05 ms is within 5% of 2.00 ms: the smaller file wins
    rows[2]["latency_p50_ms"] = 2.5
    assert recommend(rows, 0.90) == "a"          # 25% slower is not a tie


def test_rows_with_the_edge_over_optimum_int8_are_recommended_first():
    """issue #17: where a close row is >= 2x as fast as Optimum's int8 route at <= 1/2 its size, the
    recommendation is one of those, even when a bigger row is a little faster."""
    from compression.report import has_edge, optimum_route

    rows = [_row("teacher", 0.883, 17, 91), _row("int8-dynamic", 0.881, 3.84, 23.1), _row("lean", 0.884, 1.71, 15.6),
            _row("lean-vocab", 0.883, 1.85, 8.7), _row("tiny", 0.84, 0.7, 5.3)]
    rows[0]["format"] = "pytorch"
    rows[1]["steps"] = ["export", "quantize_dynamic"]
    assert optimum_route(rows) is rows[1]
    assert [r["variant"] for r in rows if has_edge(r, rows[1])] == ["lean-vocab", "tiny"]
    assert recommend(rows, 0.883) == "lean-vocab"     # tiny has the edge too, but is 4 pt under
    rows[3]["latency_p50_ms"] = 2.0                   # no longer 2x: the plain rule, fastest close row
    assert recommend(rows, 0.883) == "lean"
    rows[3]["latency_p50_ms"], rows[1]["steps"] = 1.85, ["export", "fp16"]
    assert optimum_route(rows) is None and recommend(rows, 0.883) == "lean"   # no Optimum row: nothing to have an edge over


def test_balanced_accuracy_weighs_classes_equally():
    import numpy as np

    from compression.metrics import balanced_accuracy

    y = np.array([0] * 90 + [1] * 10)
    always_negative = np.zeros(100, dtype=int)
    assert balanced_accuracy(always_negative, y) == 0.5 and np.mean(always_negative == y) == 0.9
