"""Labelled text from the Hub (``glue/sst2``) or local TSV/CSV/JSONL files.

Everything is validated up front (files exist, columns exist, labels are
0..N-1) so a bad dataset stops the build before any training starts.
"""
from __future__ import annotations

import csv
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from .config import DatasetConfig
from .errors import DataError

log = logging.getLogger(__name__)
LOCAL_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".txt")


@dataclass
class TextData:
    texts: list[str]
    labels: list[int] | None

    def __len__(self):
        return len(self.texts)

    def take(self, idx: list[int] | None) -> "TextData":
        """The rows ``idx``, in that order (None: all of them, this very object)."""
        if idx is None:
            return self
        return TextData([self.texts[i] for i in idx], None if self.labels is None else [self.labels[i] for i in idx])

    def subset(self, n: int | None, seed: int) -> "TextData":
        return self.split(n, seed)[0]

    def split(self, n: int | None, seed: int) -> tuple["TextData", "TextData"]:
        """(a deterministic random subset of ``n`` rows, the rows left out)."""
        if n is None or n >= len(self.texts):
            return self, TextData([], None if self.labels is None else [])
        idx = set(random.Random(seed).sample(range(len(self.texts)), n))
        pick = lambda keep: TextData([t for i, t in enumerate(self.texts) if (i in idx) == keep],  # noqa: E731
                                     None if self.labels is None else [y for i, y in enumerate(self.labels) if (i in idx) == keep])
        return pick(True), pick(False)


def is_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).suffix in LOCAL_SUFFIXES or Path(path).exists()


def _delimiter(path: Path, first_line: str) -> str:
    if path.suffix == ".tsv" or (path.suffix != ".csv" and "\t" in first_line):
        return "\t"
    return ","


def read_file(path: str | Path, text_column: str | tuple[str, ...], label_column: str | None,
              require_labels: bool = True) -> TextData:
    """Read one TSV/CSV/JSONL file: the one tabular reader (build, optimize, compare, the app).

    ``text_column`` may list candidates (``("sentence", "text")``): the first present is used.
    TSV is read without quote handling (GLUE style); a .txt/.csv with tabs in its header is
    read as TSV. Blank texts are skipped; a row with a different field count is an error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    try:
        if path.suffix in (".jsonl", ".json"):
            rows = []
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{path}:{n}: not valid JSON Lines ({exc.msg})") from None
            columns = sorted(rows[0]) if rows else []
        else:
            with path.open(encoding="utf-8", newline="") as f:
                delim = _delimiter(path, f.readline())
                f.seek(0)
                quoting = csv.QUOTE_NONE if delim == "\t" else csv.QUOTE_MINIMAL
                reader = csv.DictReader(f, delimiter=delim, quoting=quoting, strict=True)
                try:
                    rows = list(reader)
                except csv.Error as exc:
                    raise DataError(f"{path}: malformed {'TSV' if delim == chr(9) else 'CSV'} ({exc})") from None
                columns = reader.fieldnames or []
            for n, row in enumerate(rows, 2):  # DictReader: extra fields go under None, missing ones are None
                got = sum(k is not None and v is not None for k, v in row.items()) + len(row.get(None) or [])
                if got != len(columns):
                    raise DataError(f"{path}:{n}: {got} field(s), the header has {len(columns)}")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    candidates = (text_column,) if isinstance(text_column, str) else tuple(text_column)
    lowered = {str(c).strip().lower(): c for c in columns}
    text_key = next((lowered[c.lower()] for c in candidates if c.lower() in lowered), None)
    if text_key is None:
        raise DataError(f"{path}: no text column {' or '.join(map(repr, candidates))}; columns are {columns} (set the text column)")
    label_key = lowered.get(label_column.lower()) if label_column else None
    if require_labels and label_key is None:
        raise DataError(f"{path}: no label column {label_column!r}; columns are {columns} (set the label column)")
    texts, labels = [], []
    for n, row in enumerate(rows, 2):
        text = row.get(text_key)
        if text is None or not str(text).strip():
            continue  # blank lines carry nothing to learn or measure
        texts.append(str(text))
        if label_key is not None:
            labels.append(_parse_label(row.get(label_key), path, n))
    log.info("read %d rows from %s", len(texts), path)
    return TextData(texts, labels if label_key is not None else None)


def _parse_label(value, path, line):
    if isinstance(value, list):  # multi-label JSONL: a multi-hot list such as [0, 1, 1]
        if not all(v in (0, 1) for v in value):
            raise DataError(f"{path}:{line}: a multi-label row must be a 0/1 list, got {value!r}")
        return [int(v) for v in value]
    try:
        as_float = float(value)
        if as_float != int(as_float):
            raise ValueError
        return int(as_float)
    except (TypeError, ValueError):
        raise DataError(
            f"{path}:{line}: label {value!r} is not an integer class id; map labels to 0..N-1 first"
        ) from None


def _find_split_file(folder: Path, split: str) -> Path:
    for suffix in LOCAL_SUFFIXES:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(f"dataset folder {folder} has no {split}.tsv/.csv/.jsonl (found {sorted(p.name for p in folder.iterdir())})")


def _load_hub(cfg: DatasetConfig) -> dict[str, TextData]:
    import datasets

    name, _, config_name = cfg.path.partition("/")
    if name != "glue":  # "glue/sst2" is (name, config); other ids are the full repo id
        name, config_name = cfg.path, None
    try:
        ds = datasets.load_dataset(name, config_name or None)
    except Exception as exc:  # offline, unknown id, ...
        raise DataError(
            f"could not load dataset {cfg.path!r} from the Hub ({type(exc).__name__}: {str(exc)[:200]}); "
            "offline, point dataset.path at a local folder such as ../shared/data/sst2"
        ) from None
    out = {}
    for key, split in (("train", cfg.train_split), ("eval", cfg.eval_split)):
        if split not in ds:
            raise DataError(f"dataset {cfg.path!r} has no split {split!r}; splits are {list(ds)}")
        part = ds[split]
        for col in (cfg.text_column, cfg.label_column):
            if col not in part.column_names:
                raise DataError(f"dataset {cfg.path!r}: no column {col!r}; columns are {part.column_names}")
        out[key] = TextData(list(part[cfg.text_column]), [int(v) for v in part[cfg.label_column]])
    return out


def resolve(path: str, base_dir: Path | None = None) -> Path:
    """A local path as given, else relative to ``base_dir`` (the recipe's folder) when it exists there."""
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None and not p.exists() and (base_dir / p).exists():
        return base_dir / p
    return p


def load_splits(cfg: DatasetConfig, base_dir: Path | None = None, ood_path: str | None = None,
                ood_samples: int | None = None, num_labels: int | None = None) -> dict[str, TextData]:
    """Return {"train": TextData, "eval": TextData} (+ "ood" when ``ood_path`` is given, + "unused": the
    training rows ``train_samples`` left out), validated and subset per cfg. The out-of-domain file is
    for evaluation only.

    ``num_labels``: the classes of an already fine-tuned model (teacher.skip); labels must
    lie in 0..num_labels-1. Without it the training labels define the classes and must
    all be present, since a teacher will be fine-tuned on them."""
    splits = _load_splits(cfg, base_dir)
    if num_labels is None:
        check_labels(splits["train"].labels, cfg)
        num_labels = max(splits["train"].labels) + 1
    if ood_path:
        splits["ood"] = read_file(resolve(ood_path, base_dir), cfg.text_column, cfg.label_column)
    for key, data in splits.items():
        flat = [v for y in data.labels for v in (y if isinstance(y, list) else [y])]
        multi = any(isinstance(y, list) for y in data.labels)
        bad = sorted({y for y in flat if not (0 <= y <= 1 if multi else 0 <= y < num_labels)})
        if bad:
            raise DataError(f"{key} labels {bad[:5]} are outside 0..{num_labels - 1}, the classes of this classifier")
    train, unused = splits["train"].split(cfg.train_samples, cfg.seed)
    out = {"train": train, "eval": splits["eval"].subset(cfg.eval_samples, cfg.seed)}
    if len(unused):  # training sentences the teacher never sees: a transfer set for KD (TrainConfig.transfer)
        out["unused"] = unused
    if "ood" in splits:
        out["ood"] = splits["ood"].subset(ood_samples, cfg.seed)
    return out


def _load_splits(cfg: DatasetConfig, base_dir: Path | None = None) -> dict[str, TextData]:
    path = resolve(cfg.path, base_dir)
    if is_local(cfg.path):
        if path.is_dir():
            train = read_file(_find_split_file(path, cfg.train_split), cfg.text_column, cfg.label_column)
            ev = read_file(_find_split_file(path, cfg.eval_split), cfg.text_column, cfg.label_column)
        elif path.is_file():
            train = read_file(path, cfg.text_column, cfg.label_column)
            if cfg.eval_path:
                ev = read_file(resolve(cfg.eval_path, base_dir), cfg.text_column, cfg.label_column)
            else:  # one file: hold out 10% deterministically for evaluation
                idx = list(range(len(train)))
                random.Random(cfg.seed).shuffle(idx)
                cut = max(1, len(idx) // 10)
                ev = TextData([train.texts[i] for i in idx[:cut]], [train.labels[i] for i in idx[:cut]])
                train = TextData([train.texts[i] for i in idx[cut:]], [train.labels[i] for i in idx[cut:]])
        else:
            raise DataError(f"dataset not found: {cfg.path} (a folder with train/validation files, or one file)")
        splits = {"train": train, "eval": ev}
    else:
        splits = _load_hub(cfg)
    return splits


def check_labels(labels: list[int], cfg: DatasetConfig) -> None:
    present = sorted(set(labels))
    if len(present) < 2:
        raise DataError(f"training data has {len(present)} distinct label(s) {present}; a classifier needs at least 2")
    if present[0] != 0 or present[-1] != len(present) - 1:
        raise DataError(f"labels must be 0..N-1 with every class present; found {present[:10]} (remap them first)")
    if cfg.label_names is not None and len(cfg.label_names) != len(present):
        raise DataError(f"dataset.label_names has {len(cfg.label_names)} names but the data has {len(present)} classes")


def label_names(cfg: DatasetConfig, num_labels: int) -> dict[int, str]:
    """id2label for the teacher: the recipe's names, else LABEL_i."""
    names = list(cfg.label_names) if cfg.label_names else [f"LABEL_{i}" for i in range(num_labels)]
    return dict(enumerate(names))
