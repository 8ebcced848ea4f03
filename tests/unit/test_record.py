"""``Record.of`` (the lean version) makes the same record as the plain one it replaced."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Message

from stream.kafka_io import Record


def _plain_of(msg: Any) -> Record:
    """Record.of as it was before it was made lean: the reference."""
    raw_headers = msg.headers() or []
    pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    headers: dict[str, bytes] = {}
    for name, raw in pairs:
        headers[name] = raw.encode() if isinstance(raw, str) else (raw or b"")
    key, value = msg.key(), msg.value()
    partition, offset = msg.partition(), msg.offset()
    return Record(
        topic=msg.topic() or "",
        partition=-1 if partition is None else partition,
        offset=-1 if offset is None else offset,
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value,
        headers=headers,
        timestamp_ms=msg.timestamp()[1],
    )


class _DictHeaders:
    """A message whose headers() gives a dict (as some fakes and clients do)."""

    def __init__(self, headers: dict[str, Any]) -> None:
        self._headers = headers

    def headers(self) -> dict[str, Any]:
        return self._headers

    def key(self) -> str:
        return "k"

    def value(self) -> str:
        return "v\u00e9"

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 9

    def timestamp(self) -> tuple[int, int]:
        return (1, 1234)


MESSAGES: list[Any] = [
    Message(topic="events", partition=1, offset=5, key=b"k", value=b"{}", timestamp=(1, 99)),
    Message(
        topic="events",
        partition=0,
        offset=0,
        key=None,
        value=None,
        headers=[("a", b"1"), ("b", None), ("c", "text"), ("a", b"again")],
        timestamp=(2, 7),
    ),
    # The stubs say bytes; librdkafka hands out what was produced, str included.
    Message(topic="events", partition=2, offset=3, key="str-key", value="str-value"),  # type: ignore[arg-type]
    Message(),  # every getter None: partition and offset -1, topic ""
    _DictHeaders({"x": b"1", "y": None, "z": "s"}),
    _DictHeaders({}),
]


@pytest.mark.parametrize("msg", MESSAGES)
def test_of_makes_the_same_record_as_before(msg: Any) -> None:
    record = Record.of(msg)
    expected = _plain_of(msg)
    assert record == expected
    for name in Record.__struct_fields__:
        got, want = getattr(record, name), getattr(expected, name)
        assert type(got) is type(want), name
        assert got == want, name


def test_records_stay_immutable_and_headers_are_not_shared() -> None:
    first, second = Record.of(MESSAGES[0]), Record.of(MESSAGES[0])
    with pytest.raises(AttributeError):
        first.offset = 6  # type: ignore[misc]
    assert first.headers is not second.headers
    first.headers["added"] = b"x"
    assert second.headers == {}
