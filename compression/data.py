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

log = logging.getLogger(__name__)
LOCAL_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")


class DataError(ValueError):
    """The dataset is missing or malformed; the message names the fix."""


@dataclass
class TextData:
    texts: list[str]
    labels: list[int] | None

    def __len__(self):
        return len(self.texts)

    def subset(self, n: int | None, seed: int) -> "TextData":
        if n is None or n >= len(self.texts):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self.texts)), n))
        return TextData([self.texts[i] for i in idx], None if self.labels is None else [self.labels[i] for i in idx])


def is_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).suffix in LOCAL_SUFFIXES or Path(path).exists()


def read_file(path: str | Path, text_column: str, label_column: str | None, require_labels: bool = True) -> TextData:
    """Read one TSV/CSV/JSONL file. TSV is read without quote handling (GLUE style)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
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
            if path.suffix == ".tsv":
                reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.DictReader(f)
            try:
                rows = list(reader)
            except csv.Error as exc:
                raise DataError(f"{path}: malformed {path.suffix[1:].upper()} ({exc})") from None
            columns = reader.fieldnames or []
    if not rows:
        raise DataError(f"{path}: no rows")
    if text_column not in columns:
        raise DataError(f"{path}: no text column {text_column!r}; columns are {columns} (set dataset.text_column)")
    has_labels = label_column is not None and label_column in columns
    if require_labels and not has_labels:
        raise DataError(f"{path}: no label column {label_column!r}; columns are {columns} (set dataset.label_column)")
    texts, labels = [], []
    for n, row in enumerate(rows, 2):
        text = row.get(text_column)
        if text is None or not str(text).strip():
            continue  # blank lines carry nothing to learn or measure
        texts.append(str(text))
        if has_labels:
            labels.append(_parse_label(row.get(label_column), path, n))
    log.info("read %d rows from %s", len(texts), path)
    return TextData(texts, labels if has_labels else None)


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
                ood_samples: int | None = None) -> dict[str, TextData]:
    """Return {"train": TextData, "eval": TextData} (+ "ood" when ``ood_path`` is given),
    validated and subset per cfg. The out-of-domain file is for evaluation only."""
    splits = _load_splits(cfg, base_dir)
    if ood_path:
        ood = read_file(resolve(ood_path, base_dir), cfg.text_column, cfg.label_column)
        num_labels = max(splits["train"].labels) + 1
        bad = sorted({y for y in ood.labels if not 0 <= y < num_labels})
        if bad:
            raise DataError(f"out-of-domain labels {bad[:5]} in {ood_path} are outside 0..{num_labels - 1} seen in training")
        splits["ood"] = ood.subset(ood_samples, cfg.seed)
    return splits


def _load_splits(cfg: DatasetConfig, base_dir: Path | None = None) -> dict[str, TextData]:
    path = resolve(cfg.path, base_dir)
    if is_local(cfg.path):
        if path.is_dir():
            train = read_file(_find_split_file(path, cfg.train_split), cfg.text_column, cfg.label_column)
            ev = read_file(_find_split_file(path, cfg.eval_split), cfg.text_column, cfg.label_column)
        elif path.is_file():
            train = read_file(path, cfg.text_column, cfg.label_column)
            if cfg.eval_path:
                ev = read_file(cfg.eval_path, cfg.text_column, cfg.label_column)
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
    check_labels(splits["train"].labels, cfg)
    num_labels = max(splits["train"].labels) + 1
    bad = sorted({y for y in splits["eval"].labels if not 0 <= y < num_labels})
    if bad:
        raise DataError(f"evaluation labels {bad[:5]} are outside 0..{num_labels - 1} seen in training")
    return {
        "train": splits["train"].subset(cfg.train_samples, cfg.seed),
        "eval": splits["eval"].subset(cfg.eval_samples, cfg.seed),
    }


def check_labels(labels: list[int], cfg: DatasetConfig) -> None:
    present = sorted(set(labels))
    if len(present) < 2:
        raise DataError(f"training data has {len(present)} distinct label(s) {present}; a classifier needs at least 2")
    if present[0] != 0 or present[-1] != len(present) - 1:
        raise DataError(f"labels must be 0..N-1 with every class present; found {present[:10]} (remap them first)")
    if cfg.label_names is not None and len(cfg.label_names) != len(present):
        raise DataError(f"dataset.label_names has {len(cfg.label_names)} names but the data has {len(present)} classes")


def label_maps(cfg: DatasetConfig, num_labels: int) -> tuple[dict[int, str], dict[str, int]]:
    names = list(cfg.label_names) if cfg.label_names else [f"LABEL_{i}" for i in range(num_labels)]
    return dict(enumerate(names)), {n: i for i, n in enumerate(names)}
