"""Datasets: local TSV/CSV/JSONL and folders, validated before any work."""
import json

import pytest

from compression.config import DatasetConfig
from compression.data import load_splits, read_file
from compression.errors import DataError
from conftest import SST2, synthetic, write_tsv


def test_folder_tsv_and_subsets(tiny_data):
    splits = load_splits(DatasetConfig(path=str(tiny_data), train_samples=50, eval_samples=20, seed=3))
    assert len(splits["train"]) == 50 and len(splits["eval"]) == 20
    again = load_splits(DatasetConfig(path=str(tiny_data), train_samples=50, eval_samples=20, seed=3))
    assert again["train"].texts == splits["train"].texts  # deterministic subsets


def test_csv_jsonl_and_single_file_holdout(tmp_path):
    rows = synthetic(100, 5)
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,label\n" + "".join(f'"{t}, really",{y}\n' for t, y in rows))
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    for path in (csv_path, jl):
        splits = load_splits(DatasetConfig(path=str(path), text_column="text"))
        assert len(splits["eval"]) == 10 and len(splits["train"]) == 90
        assert not set(splits["eval"].texts) & set(splits["train"].texts) or len(set(t for t, _ in rows)) < 100
    assert read_file(csv_path, "text", "label").texts[0].endswith(", really")  # quoted comma kept


@pytest.mark.skipif(not SST2.is_dir(), reason="../shared/data/sst2 not present")
def test_sst2_reads_without_quote_handling():
    splits = load_splits(DatasetConfig(path=str(SST2)))
    assert len(splits["train"]) == 67349 and len(splits["eval"]) == 872
    assert set(splits["eval"].labels) == {0, 1}


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="dataset not found"):
        load_splits(DatasetConfig(path=str(tmp_path / "nope")))
    (tmp_path / "only").mkdir()
    write_tsv(tmp_path / "only" / "train.tsv", synthetic(10, 1))
    with pytest.raises(DataError, match="has no validation.tsv"):
        load_splits(DatasetConfig(path=str(tmp_path / "only")))


def test_wrong_columns_named_in_error(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("review\tstars\nnice\t1\n")
    with pytest.raises(DataError) as exc:
        load_splits(DatasetConfig(path=str(p)))
    assert "no text column 'sentence'" in str(exc.value) and "['review', 'stars']" in str(exc.value)


@pytest.mark.parametrize(
    "labels, message",
    [([1, 2], "labels must be 0..N-1"), ([0, 0], "at least 2"), (["pos", "neg"], "not an integer class id")],
)
def test_bad_labels(tmp_path, labels, message):
    rows = [(f"text {i}", labels[i % 2]) for i in range(40)]
    write_tsv(tmp_path / "d.tsv", rows)
    with pytest.raises(DataError, match=message):
        load_splits(DatasetConfig(path=str(tmp_path / "d.tsv")))


def test_malformed_jsonl(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"sentence": "ok", "label": 1}\n{broken\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: not valid JSON Lines"):
        load_splits(DatasetConfig(path=str(p)))


def test_hub_dataset_offline_error_names_local_fix(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="point dataset.path at a local folder"):
        load_splits(DatasetConfig(path="glue/sst2"))


def test_take_returns_the_rows_asked_for_in_that_order():
    from compression.data import TextData

    data = TextData(["a", "b", "c", "d"], [0, 1, 0, 1])
    some = data.take([3, 0, 2])
    assert some.texts == ["d", "a", "c"] and some.labels == [1, 0, 0]
    assert data.take(None) is data
    assert TextData(["x", "y"], None).take([1]).labels is None and TextData(["x", "y"], None).take([1]).texts == ["y"]
