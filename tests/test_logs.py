"""Expected third-party log lines are muted, exactly those, only inside the block."""
import logging

from compression.logs import muted


def test_muted_drops_only_matching_lines_of_named_loggers_inside_the_block(caplog):
    named, other = logging.getLogger("bcs.test.noisy"), logging.getLogger("bcs.test.other")
    with caplog.at_level(logging.INFO):
        with muted(("bcs.test.noisy",), ("Input hidden size", "The IR version")):
            named.warning("Input hidden size (%d) is not same", 32)
            named.warning("The IR version of the input model is 8")
            named.warning("a real problem")
            other.warning("Input hidden size (%d) is not same", 32)     # another logger: kept
        named.warning("Input hidden size (%d) is not same", 64)         # after the block: kept
    got = [(r.name, r.getMessage()) for r in caplog.records]
    assert got == [("bcs.test.noisy", "a real problem"), ("bcs.test.other", "Input hidden size (32) is not same"),
                   ("bcs.test.noisy", "Input hidden size (64) is not same")]
    assert not named.filters  # the filter is gone again


def test_muted_removes_its_filter_when_the_block_raises():
    named = logging.getLogger("bcs.test.raising")
    try:
        with muted(("bcs.test.raising",), ("x",)):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert not named.filters
