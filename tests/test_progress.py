"""The build's progress file, its estimate, and the lock that keeps two builds off one folder."""
import json
import subprocess
import sys
import time

import pytest

from compression import artifacts, progress
from compression.build import build
from compression.errors import BuildError, RecipeError
from compression.recipe import Recipe
from conftest import REPO, tiny_recipe_dict


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_estimate_from_the_teacher_rate_then_the_variants(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "time", clock)
    p = progress.Progress(tmp_path, ["int8", "kd", "kd-int8"], work=[0.0, 1000.0, 0.0], teacher_work=2000.0)
    assert p.eta_seconds() is None                              # nothing timed yet: no number invented
    p.begin("teacher")
    clock.now += 100
    p.step(50, 100)                                             # half the teacher in 100 s: 200 s for 2000 units
    assert p.eta_seconds() == pytest.approx(100 + 3 * progress.FIXED_PRIOR_S + 0.1 * 1000)
    clock.now += 100
    p.teacher_done(200.0)
    assert p.eta_seconds() == pytest.approx(3 * progress.FIXED_PRIOR_S + 0.1 * 1000)   # the teacher's rate stands in
    p.begin("int8")
    clock.now += 30
    p.variant_done("int8", 30.0)                                # a fixed part of 30 s
    assert p.eta_seconds() == pytest.approx(2 * 30 + 0.1 * 1000)
    p.begin("kd")
    clock.now += 40
    p.step(10, 40)                                              # the running stage from its own steps: 120 s more
    assert p.eta_seconds() == pytest.approx(120 + 30)
    clock.now += 120
    p.variant_done("kd", 190.0)                                 # 160 s over 1000 units: the fit replaces the prior
    assert p.eta_seconds() == pytest.approx(30)
    state = json.loads((tmp_path / artifacts.PROGRESS).read_text())
    assert state["state"] == "running" and state["finished"] == ["teacher", "int8", "kd"] and state["pending"] == ["kd-int8"]
    assert state["stages_done"] == 3 and state["stages_total"] == 4 and state["eta_s"] == pytest.approx(30)
    p.done()
    assert json.loads((tmp_path / artifacts.PROGRESS).read_text())["state"] == "done"


def test_a_stage_setup_before_its_loop_is_not_spread_over_the_steps(tmp_path, monkeypatch):
    # on a Zen 1 the pruned student spent 128 s on teacher logits before its first KD step, and the
    # bar read 26 min left where about 11 were: the setup was divided among the first steps
    clock = Clock()
    monkeypatch.setattr(progress.time, "time", clock)
    p = progress.Progress(tmp_path, ["kd"], work=[1000.0], teacher_work=1000.0)
    p.teacher_done(100.0)
    p.begin("kd")
    clock.now += 128                                            # teacher logits, importance, pruning
    p.step(1, 750)
    assert p.eta_seconds() == pytest.approx(128 * 749)         # one report: the stage's time is all there is
    clock.now += 20
    p.step(11, 750)                                             # 10 steps in 20 s: 2 s a step from here on
    assert p.eta_seconds() == pytest.approx(2 * 739)
    clock.now += 10
    p.step(1, 300)                                              # the stage's next loop (distill, then prune): a new mark
    clock.now += 30
    p.step(11, 300)
    assert p.eta_seconds() == pytest.approx(3 * 289)


def test_step_updates_are_written_at_most_once_a_second(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "time", clock)
    p = progress.Progress(tmp_path, ["a"], [10.0], teacher_work=10.0)
    p.step(1, 100)
    p.step(2, 100)                                              # same instant: not rewritten
    assert json.loads((tmp_path / artifacts.PROGRESS).read_text())["steps_done"] is None
    clock.now += 1.5
    p.step(3, 100)
    assert json.loads((tmp_path / artifacts.PROGRESS).read_text())["steps_done"] == 3


def test_the_lock_keeps_a_second_build_out(tmp_path, tiny_model, tiny_data):
    with progress.BuildLock(tmp_path):
        assert progress.holder(tmp_path) is not None
        with pytest.raises(BuildError, match="another build is already running here"):
            build(Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data)), tmp_path)
        # the same in another process, as a second `python app.py` would start it
        res = subprocess.run([sys.executable, "-c", "from compression.progress import holder; import sys; "
                              "print(holder(sys.argv[1]))", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
        assert res.stdout.strip().isdigit()
    assert progress.holder(tmp_path) is None
    assert not (tmp_path / "teacher").exists()                  # the refused build did nothing


def test_a_failed_build_leaves_its_error_in_the_progress_file(tmp_path, tiny_model, tiny_data):
    d = tiny_recipe_dict(tiny_model, tiny_data)
    d["dataset"]["path"] = str(tmp_path / "no-such-data")
    with pytest.raises(Exception, match="dataset not found"):
        build(Recipe.from_dict(d), tmp_path / "out")
    state = progress.read(tmp_path / "out")
    assert state["state"] == "failed" and "dataset not found" in state["error"] and "\n" not in state["error"]
    assert state["running"] is False and progress.holder(tmp_path / "out") is None


def test_a_build_whose_process_vanished_reads_as_stopped(tmp_path):
    p = progress.Progress(tmp_path, ["a", "b"], [0.0, 0.0])
    p.teacher_done(1.0)
    p.variant_done("a", 1.0)
    state = progress.read(tmp_path)                               # no process holds the lock
    assert state["state"] == "stopped" and state["finished"] == ["teacher", "a"] and state["pending"] == ["b"]


def test_a_finished_build_reports_every_stage(built):
    _, out, _ = built
    state = progress.read(out)
    assert state["state"] == "done" and state["pending"] == [] and state["error"] is None
    assert set(state["finished"]) == {p.name for p in artifacts.list_variants(out)}


def test_unknown_variant_fails_before_the_lock_is_taken(tmp_path, tiny_model, tiny_data):
    with pytest.raises(RecipeError, match="no variant 'nope'"):
        build(Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data)), tmp_path, only=["nope"])
    assert not (tmp_path / artifacts.PROGRESS).exists()
    time.sleep(0)


def test_a_claimed_lock_passes_to_the_build_process_without_a_gap(tmp_path):
    """app.py claims the lock before the build process exists and hands the descriptor over: a
    second claimer is refused at every moment, the child's BuildLock takes the inherited lock instead
    of failing on it, and the lock lives exactly as long as the child."""
    import os

    fd = progress.claim(tmp_path)
    assert fd is not None
    assert progress.claim(tmp_path) is None                      # a second app started now follows
    assert progress.holder(tmp_path) == os.getpid()
    child_code = ("import sys; from pathlib import Path; from compression.progress import BuildLock\n"
                  "with BuildLock(Path(sys.argv[1])):\n    print('locked', flush=True); sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", child_code, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, pass_fds=(fd,),
                             env={**os.environ, progress.LOCK_FD_ENV: str(fd)})
    try:
        assert child.stdout.readline().strip() == "locked"       # took the inherited lock, did not refuse
        os.close(fd)                                             # the app's copy goes; the lock stays
        assert progress.holder(tmp_path) == child.pid            # the child's pid, written at offset 0
        assert progress.claim(tmp_path) is None
    finally:
        child.communicate("", timeout=30)
    fd2 = progress.claim(tmp_path)                               # free once the build process ended
    assert fd2 is not None
    os.close(fd2)


def test_an_unrelated_inherited_descriptor_is_not_taken_for_the_lock(tmp_path, monkeypatch):
    """A stale or foreign descriptor number in the environment must not be trusted as the lock."""
    import os

    other = os.open(tmp_path / "not-the-lock", os.O_RDWR | os.O_CREAT)
    monkeypatch.setenv(progress.LOCK_FD_ENV, str(other))
    (tmp_path / "b").mkdir()
    with progress.BuildLock(tmp_path / "b"):
        assert progress.holder(tmp_path / "b") == os.getpid()
        assert progress.claim(tmp_path / "b") is None
    os.close(other)
