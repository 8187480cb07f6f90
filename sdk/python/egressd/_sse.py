"""A Server-Sent Events parser (the part of the WHATWG EventSource rules the API uses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Union

__all__ = ["ServerSentEvent", "parse"]


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its ``id`` (``None`` when it had none), type and data."""

    id: Optional[str]
    event: str
    data: str


def parse(lines: Iterable[Union[bytes, str]]) -> Iterator[ServerSentEvent]:
    """Yield the events of a stream given line by line (with or without line endings).

    Comment lines (``:`` first) are skipped, ``data`` lines are joined with newlines, an event
    without ``event:`` has type ``"message"``, and an event with no data is not dispatched,
    as EventSource does. An event cut off by the end of the stream is dropped.
    """
    event_id: Optional[str] = None
    event = ""
    data: list = []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if line == "":
            if data:
                yield ServerSentEvent(id=event_id, event=event or "message", data="\n".join(data))
            event_id, event, data = None, "", []
            continue
        if line.startswith(":"):
            continue  # a comment: a heartbeat, or a note about dropped records
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "id":
            if "\0" not in value:
                event_id = value
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)
        # "retry" and unknown fields are ignored.
