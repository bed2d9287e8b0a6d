"""benchmarks/negation.py: which sentences count as negated, and the two accuracies it reports."""
from conftest import benchmark_module


def test_negation_words_and_split_accuracy():
    neg = benchmark_module("negation")
    texts = ["not bad at all", "it is n't funny", "a knotty , notable film", "nothing works", "great fun", "no"]
    flags = [bool(neg.NEGATION.search(t)) for t in texts]
    assert flags == [True, True, False, True, False, True]  # whole words only: "knotty", "notable" are not negations
    labels = [1, 0, 1, 0, 1, 0]
    pred = [1, 1, 0, 0, 1, 0]  # negated: 3 of 4 right; others: 1 of 2 right
    assert neg.split_accuracy(pred, labels, flags) == (0.75, 0.5)
