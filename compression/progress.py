"""A build's progress file and lock: the one truth that the terminal and the app's page show.

``progress.json`` in the build folder says where the build is (state, stage, the current
stage's training steps, finished variants, an estimate of the time left, the error that
stopped it) and is rewritten atomically as it moves, at most once a second for step
updates. ``.build.lock`` is held (``flock``) for the whole build: a second build of the same
folder, or a second ``python app.py``, sees the lock and follows instead of building twice.
The operating system releases the lock when the build process ends, however it ends.

Torch-free: the app reads this module's :func:`read` and :func:`holder`.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from . import artifacts
from .errors import BuildError

log = logging.getLogger(__name__)
WRITE_EVERY = 1.0       # seconds between step-level rewrites of progress.json
FIXED_PRIOR_S = 20.0    # a variant's export + quantization + measurement before one has been timed


class BuildLock:
    """``with BuildLock(folder):`` hold the folder's build lock, or raise BuildError naming its holder."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / artifacts.LOCK
        self.fd: int | None = None

    def __enter__(self):
        fd = _inherited(self.path)
        if fd is not None:
            _write_pid(fd)  # the parent's pid is in the file: this process is the builder now
        else:
            fd = claim(self.path.parent)
        if fd is None:
            pid = holder(self.path.parent)
            raise BuildError(f"{self.path.parent}: another build is already running here"
                             f"{f' (process {pid})' if pid else ''}; wait for it or stop it")
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def claim(folder: Path) -> int | None:
    """Take ``folder``'s build lock now: an open descriptor holding it, or None when a build holds it.

    ``python app.py`` claims the lock *before* it starts the build process and hands the descriptor
    over (:data:`LOCK_FD_ENV`), so two apps started together cannot both see a free folder in the
    seconds the build process spends importing torch."""
    path = Path(folder) / artifacts.LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    _write_pid(fd)
    return fd


def _write_pid(fd: int) -> None:
    """This process's pid as the lock file's whole content (what :func:`holder` reports)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)  # at 0: an inherited descriptor shares the parent's offset


LOCK_FD_ENV = "BCS_BUILD_LOCK_FD"   # a descriptor of the folder's lock file, already locked by the parent


def _inherited(path: Path) -> int | None:
    """The lock descriptor a parent claimed for this build (same file), or None. Read once."""
    value = os.environ.pop(LOCK_FD_ENV, None)
    if not value or not value.isdigit():
        return None
    fd = int(value)
    try:
        same = os.path.exists(path) and os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return None
    return fd if same else None


def holder(folder: Path) -> int | None:
    """The pid of the process building ``folder`` now, or None when no build holds its lock."""
    path = Path(folder) / artifacts.LOCK
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held exclusively: a build is running
            text = path.read_text().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read(folder: Path) -> dict | None:
    """The progress file as last written, with ``running`` telling whether its build still holds the lock."""
    data = artifacts.read_json(Path(folder) / artifacts.PROGRESS)
    if data is None:
        return None
    data["running"] = holder(folder) is not None
    if data.get("state") == "running" and not data["running"]:
        data["state"] = "stopped"  # killed, or the machine went down: what is finished stays finished
    return data


class Progress:
    """Stages (the teacher, then each variant), their training work, and the estimate of what is left.

    A variant's time is modelled as a fixed part (export, quantization, measurement: the mean of the
    variants that trained nothing) plus seconds per unit of training work (sentence passes x encoder
    layers, declared by the steps). Until a variant has trained, the teacher's own rate stands in for
    the per-unit cost, so the estimate means something from the first minutes. A stage reporting
    steps (``step``) is estimated from its own step rate, timed from its loop's first report (the
    stage's setup before the loop is not a step). Every change is written to ``progress.json``
    and logged as one line per finished stage."""

    def __init__(self, folder: Path | None, names: list[str], work: list[float], teacher_work: float = 0.0,
                 write: bool = True):
        self.folder, self.write_file = Path(folder) if folder else None, write and folder is not None
        self.names, self.work = list(names), list(work)
        self.teacher_work = teacher_work
        self.start = time.time()
        self.index = -1                     # -1: the teacher
        self.stage_start = self.start
        self.steps: tuple[int, int] | None = None
        self.step_mark: tuple[float, int, int] | None = None  # (time, done, total) of the stage's first step report
        self.fixed: list[float] = []
        self.trained: list[tuple[float, float]] = []
        self.teacher_rate: float | None = None
        self.finished: list[str] = []
        self.skipped: dict[str, str] = {}          # stages skipped while building (a step said it cannot apply)
        self.not_applicable: dict[str, str] = {}   # variants left out before the build started
        self.state, self.error, self.stage = "running", None, "teacher"
        self._last_write = 0.0
        self.save(force=True)

    # ---- events
    def begin(self, stage: str) -> None:
        self.stage, self.stage_start, self.steps, self.step_mark = stage, time.time(), None, None
        self.save(force=True)

    def step(self, done: int, total: int) -> None:
        """A training stage's own progress (the teacher's Trainer, every KD loop)."""
        mark = self.step_mark
        if mark is None or total != mark[2] or done < mark[1]:  # the stage's first report, or its next loop
            self.step_mark = (time.time(), done, total)
        self.steps = (done, total)
        self.save()

    def teacher_done(self, seconds: float, reused: bool = False) -> None:
        if not reused and self.teacher_work and seconds > 0:
            self.teacher_rate = seconds / self.teacher_work
        self.finished.append(artifacts.TEACHER)
        self.index, self.steps = 0, None
        self._log(f"teacher{' (reused)' if reused else ''}", seconds)

    def variant_done(self, name: str, seconds: float, kind: str = "variant") -> None:
        """``kind``: "variant" (timed, fitted), "reused" (finished earlier) or "skipped"."""
        work = self.work[self.index] if self.index < len(self.work) else 0.0
        if kind == "variant":
            (self.trained if work else self.fixed).append((seconds, work) if work else seconds)
            self.finished.append(name)
        elif kind == "reused":
            self.finished.append(name)
        self.index += 1
        self.steps = None
        self._log(name + (" (reused)" if kind == "reused" else ""), seconds)

    def skip(self, name: str, reason: str) -> None:
        self.skipped[name] = reason
        self.variant_done(name, 0.0, kind="skipped")

    def done(self) -> None:
        self.state, self.stage, self.steps = "done", "report", None
        self.save(force=True)

    def fail(self, error: str) -> None:
        self.state, self.error = "failed", error
        self.save(force=True)

    # ---- the estimate
    def _fixed(self) -> float:
        return sum(self.fixed) / len(self.fixed) if self.fixed else FIXED_PRIOR_S

    def _per_unit(self) -> float | None:
        if self.trained:
            fixed = self._fixed()
            return sum(max(s - fixed, 0.0) for s, _ in self.trained) / sum(w for _, w in self.trained)
        return self.teacher_rate

    def _step_seconds(self, now: float) -> float | None:
        """Seconds per step of the running loop, timed from its first report on: what a stage does
        before its loop (teacher logits, importance, pruning: two minutes on a slow CPU) is not
        spread over the steps. Until a second report, the stage's whole time over its steps."""
        if not self.steps or self.steps[0] <= 0:
            return None
        done = self.steps[0]
        if self.step_mark is not None and done > self.step_mark[1]:
            return (now - self.step_mark[0]) / (done - self.step_mark[1])
        return (now - self.stage_start) / done

    def eta_seconds(self) -> float | None:
        """Seconds left, or None while nothing has been timed yet."""
        now = time.time()
        current = 0.0
        per_step = self._step_seconds(now)
        if per_step is not None:
            done, total = self.steps
            current = per_step * (total - done)
        if self.index < 0:  # the teacher: its own steps, then every variant at the teacher's rate
            if per_step is None:
                return None
            rate = per_step * self.steps[1] / max(self.teacher_work, 1)
            return current + sum(self._fixed() + rate * w for w in self.work)
        per_unit = self._per_unit()
        if per_unit is None:
            return None
        remaining = self.work[self.index + 1:] if self.steps else self.work[self.index:]
        return current + sum(self._fixed() + per_unit * w for w in remaining)

    def left(self) -> str:
        eta = self.eta_seconds()
        return "all stages done" if self.index >= len(self.work) else (
            f"about {eta / 60:.1f} min left" if eta is not None else f"{len(self.work) - max(self.index, 0)} variants to go")

    def _log(self, what: str, seconds: float) -> None:
        done = len(self.finished) + len(self.skipped)
        log.info("[%d/%d] %s done in %.0f s; %.1f min elapsed, %s", done, len(self.names) + 1, what, seconds,
                 (time.time() - self.start) / 60, self.left())
        self.save(force=True)

    # ---- the file
    def snapshot(self) -> dict:
        eta = self.eta_seconds() if self.state == "running" else 0.0
        return {
            "state": self.state, "stage": self.stage, "error": self.error, "pid": os.getpid(),
            "stages_done": len(self.finished) + len(self.skipped), "stages_total": len(self.names) + 1,
            "steps_done": self.steps[0] if self.steps else None, "steps_total": self.steps[1] if self.steps else None,
            "eta_s": None if eta is None else round(eta, 1), "elapsed_s": round(time.time() - self.start, 1),
            "finished": list(self.finished), "skipped": {**self.not_applicable, **self.skipped},
            "pending": [n for n in self.names if n not in self.finished and n not in self.skipped],
            "names": list(self.names),  # the whole plan, in build order: the page lists it from the start
            "updated": time.time(),
        }

    def save(self, force: bool = False) -> None:
        if not self.write_file or (not force and time.time() - self._last_write < WRITE_EVERY):
            return
        self._last_write = time.time()
        try:
            artifacts.write_json(self.folder / artifacts.PROGRESS, self.snapshot())
        except OSError as exc:  # a full disk must not stop the build over a status file
            log.debug("progress file not written: %s", exc)
