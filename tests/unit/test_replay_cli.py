"""vigil replay's checks of its options, before it reads anything."""

from __future__ import annotations

import pytest

from stream.replay import _check_writable
from stream.topic_reader import ReplayError


def test_an_output_that_cannot_be_written_is_refused_before_the_replay(tmp_path):
    _check_writable(tmp_path / "alerts.jsonl")  # a new file in a writable directory
    (tmp_path / "alerts.jsonl").write_bytes(b"earlier\n")
    _check_writable(tmp_path / "alerts.jsonl")  # one there already, to be replaced
    with pytest.raises(ReplayError, match="no directory"):
        _check_writable(tmp_path / "missing" / "alerts.jsonl")
    with pytest.raises(ReplayError, match="is a directory"):
        _check_writable(tmp_path)
