"""The command line's success paths, in process (``main([...])``): what each option really changes."""
import json
import shutil

from compression import artifacts
from compression.__main__ import main
from conftest import finished_stamps, make_tiny_model, synthetic, tiny_recipe_dict, write_tsv


def test_build_only_force_base_model_and_dataset(built, tmp_path, tiny_data, capsys):
    _, out, _ = built
    work = tmp_path / "v"
    shutil.copytree(out, work)
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(tiny_recipe_dict(make_tiny_model(tmp_path / "m"), tiny_data)))
    # the recipe names another copy of the tiny model: --base-model puts back the one `built` used
    original = artifacts.read_config(out / "fp32")["recipe"]["base_model"]
    before = finished_stamps(work)
    assert main(["build", "--recipe", str(recipe), "--variants-dir", str(work), "--base-model", original,
                 "--only", "fp16", "--force"]) == 0
    after = finished_stamps(work)
    assert {n for n in before if after[n] != before[n]} == {"fp16"}       # --only: one variant, --force: rebuilt
    assert "recommended:" in capsys.readouterr().out
    assert main(["build", "--recipe", str(recipe), "--variants-dir", str(work), "--base-model", original,
                 "--only", "fp32"]) == 0
    assert finished_stamps(work) == after                                          # without --force: reused
    other = tmp_path / "data"
    other.mkdir()
    write_tsv(other / "train.tsv", synthetic(200, 5))
    write_tsv(other / "validation.tsv", synthetic(30, 6))
    assert main(["build", "--recipe", str(recipe), "--variants-dir", str(tmp_path / "w2"), "--base-model", original,
                 "--dataset", str(other), "--only", "fp32"]) == 0
    m = artifacts.read_metrics(tmp_path / "w2" / "fp32")
    assert m["eval_samples"] == 30 and str(other) in m["eval_data"]          # --dataset replaced the recipe's data


def test_evaluate_rewrites_every_row_and_steps_lists_the_registry(built, tmp_path, capsys):
    _, out, _ = built
    work = tmp_path / "v"
    shutil.copytree(out, work)
    stale = artifacts.read_metrics(work / "int8-dynamic")
    stale["latency_p50_ms"] = 999.0
    artifacts.write_metrics(work / "int8-dynamic", stale)
    assert main(["evaluate", "--variants-dir", str(work)]) == 0
    assert artifacts.read_metrics(work / "int8-dynamic")["latency_p50_ms"] < 999.0
    assert str(work / "report.md") in capsys.readouterr().out
    assert main(["steps"]) == 0
    listed = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in listed]
    assert {"export", "fuse", "quantize_dynamic", "quantize_static", "distill", "prune_structured", "vocab_prune"} <= set(names)
    assert all("[" in line and "]" in line for line in listed)


def test_report_reranks_without_remeasuring_under_another_rule(built, tmp_path, capsys):
    """`report` rewrites report.md/json from the measured rows under the recipe's rule or the one given,
    states it, and changes no metrics.json (nothing is re-measured)."""
    import json

    from compression.report import recommend

    _, out, _ = built
    work = tmp_path / "v"
    shutil.copytree(out, work)
    before = {f.name: (f / "metrics.json").read_bytes() for f in artifacts.list_variants(work)}
    assert main(["report", "--variants-dir", str(work)]) == 0
    saved = json.loads((work / "report.json").read_text())
    assert saved["recommend_rule"]["criterion"] == "absolute" and "rule: absolute 0.01" in capsys.readouterr().out
    teacher = next(r for r in saved["rows"] if r["variant"] == "teacher")["accuracy"]
    assert main(["report", "--variants-dir", str(work), "--tolerance", "0.99", "--criterion", "relative"]) == 0
    loose = json.loads((work / "report.json").read_text())
    assert loose["recommended"] == recommend(saved["rows"], teacher, 0.99, "relative")   # the rule given, not the recipe's
    assert loose["recommend_rule"]["allowed_loss"] == 0.99 * teacher
    assert loose["recommend_rule"]["criterion"] == "relative" and "at least 1% of the teacher's" in (work / "report.md").read_text()
    assert {f.name: (f / "metrics.json").read_bytes() for f in artifacts.list_variants(work)} == before
    assert main(["report", "--variants-dir", str(work), "--tolerance", "1.5"]) == 2
    assert "tolerance must be in [0, 1)" in capsys.readouterr().err
    assert main(["report", "--variants-dir", str(tmp_path / "nothing")]) == 2
    assert "not a build folder" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_2_in_process(tmp_path, capsys):
    assert main(["build", "--recipe", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "recipe file not found" in err
    assert main(["evaluate", "--variants-dir", str(tmp_path)]) == 2
    assert "not a build folder" in capsys.readouterr().err
