"""benchmarks/noise.py: each variant's agreement with the teacher's export on plain and user-noised training sentences."""
import json
import shutil
import sys

import yaml

from conftest import benchmark_module


def test_noise_report_agrees_with_itself_and_opens_folders_of_other_versions(built, tmp_path, monkeypatch):
    noise = benchmark_module("noise")
    sweep = sys.modules["teacher_sweep"]
    monkeypatch.setattr(sweep, "DEV_SIZE", 20)
    monkeypatch.setattr(sweep, "MIN_DEV_WORDS", 5)  # the tiny data's sentences are five words long
    _, out, _ = built
    folder = tmp_path / "family"
    shutil.copytree(out, folder)
    saved = yaml.safe_load((folder / "recipe.yaml").read_text())
    saved["variants"]["int8-dynamic"][1]["quantize_dynamic"]["option_of_a_later_version"] = 1
    (folder / "recipe.yaml").write_text(yaml.safe_dump(saved))  # a step option this version does not know
    monkeypatch.setattr(sys, "argv", ["noise.py", str(folder), "fp32", "int8-dynamic", "--json", str(tmp_path / "n.json")])
    assert noise.main() == 0
    report = json.loads((tmp_path / "n.json").read_text())
    assert report["reference"] == "fp32" and report["sentences"] == 20
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"fp32", "int8-dynamic"}
    for side in ("plain", "noisy"):  # the reference against itself: every answer kept, on both sides
        assert rows["fp32"][side] == {"positives_kept": 1.0, "negatives_kept": 1.0, "balanced": 1.0}
        kept = rows["int8-dynamic"][side]
        assert 0 <= kept["positives_kept"] <= 1 and 0 <= kept["negatives_kept"] <= 1
        assert abs(kept["balanced"] - (kept["positives_kept"] + kept["negatives_kept"]) / 2) < 1e-9
