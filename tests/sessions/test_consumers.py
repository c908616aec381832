"""Pure parts of the chat consumers: how a published batch of a turn's events becomes frames."""

from __future__ import annotations

from apps.sessions.consumers import _deltas_joined


def _delta(stream: str, offset: int, text: str) -> dict:
    return {"kind": "delta", "stream": stream, "offset": offset, "text": text}


def test_contiguous_pieces_of_one_answer_in_a_batch_become_one_delta():
    batch = [{"kind": "stream_start", "stream": "s1"}, _delta("s1", 0, "We open "), _delta("s1", 8, "at nine"),
             _delta("s1", 15, "."), {"kind": "message", "message": {"index": 3}}]
    assert _deltas_joined(batch) == [{"kind": "stream_start", "stream": "s1"}, _delta("s1", 0, "We open at nine."),
                                     {"kind": "message", "message": {"index": 3}}]


def test_pieces_of_other_streams_gaps_and_other_events_are_not_joined():
    batch = [_delta("s1", 0, "ab"), _delta("s2", 2, "cd"),  # another stream
             _delta("s2", 10, "ef"),  # a gap: the client must see it to wait for the final message
             {"kind": "thinking", "on": True}, _delta("s2", 12, "gh")]  # not adjacent
    assert _deltas_joined(batch) == batch
    assert _deltas_joined([]) == []
