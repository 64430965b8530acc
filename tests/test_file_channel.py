"""The development file channel: idempotent by provider key, at a constant cost per message
(an index of the keys sent beside the outbox, read incrementally; never the whole outbox)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from activities import channels
from activities.channels import FileChannel, OutgoingMessage


def _message(n: int = 0) -> OutgoingMessage:
    return OutgoingMessage(channel="email", to="a@example.org", subject=f"s{n}", body="b")


async def test_a_key_is_written_once_and_indexed(tmp_path: Path) -> None:
    channel = FileChannel(tmp_path / "outbox.log")
    for key in ("k1", "k2", "k1", "k2", "k3"):
        await channel.send(_message(), key)
    assert channel.sent_keys() == ["k1", "k2", "k3"]
    index = [json.loads(line) for line in channel.index_path.read_text().splitlines()]
    assert [key for _, key in index] == ["k1", "k2", "k3"]
    # Each entry's offset is the end of its message's line in the outbox.
    assert index[-1][0] == (tmp_path / "outbox.log").stat().st_size


async def test_cost_per_message_does_not_grow_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = FileChannel(tmp_path / "outbox.log")
    for n in range(300):
        await channel.send(_message(n), f"k{n}")
    calls = 0
    real = json.loads

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(channels.json, "loads", counting)
    await channel.send(_message(), "k-new")
    await channel.send(_message(), "k5")  # a repeat: answered from the index
    assert calls == 0  # nothing re-read: not the outbox, not the index
    assert channel.sent_keys().count("k5") == 1


async def test_writers_sharing_the_file_see_each_others_keys(tmp_path: Path) -> None:
    path = tmp_path / "outbox.log"
    first, second = FileChannel(path), FileChannel(path)  # two dispatcher processes
    await first.send(_message(), "a")
    await second.send(_message(), "a")
    await second.send(_message(), "b")
    await first.send(_message(), "b")
    await asyncio.gather(*(c.send(_message(), f"c{n}") for n in range(20) for c in (first, second)))
    keys = first.sent_keys()
    assert sorted(keys) == sorted({"a", "b", *(f"c{n}" for n in range(20))})


async def test_an_outbox_without_index_and_a_crash_before_indexing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.log"
    # A file from before the index, ending in a line torn by a crash mid-write.
    path.write_text(
        json.dumps({"provider_key": "old"}) + "\n" + '{"provider_key": "to', encoding="utf-8"
    )
    channel = FileChannel(path)
    await channel.send(_message(), "old")
    await channel.send(_message(), "new")
    assert channel.sent_keys() == ["old", "new"]  # the torn line stayed on its own line
    # A writer that appended its message but crashed before indexing it.
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"provider_key": "unindexed"}) + "\n")
    fresh = FileChannel(path)
    await fresh.send(_message(), "unindexed")
    await channel.send(_message(), "unindexed")
    assert channel.sent_keys() == ["old", "new", "unindexed"]


async def test_a_removed_outbox_starts_a_fresh_index(tmp_path: Path) -> None:
    path = tmp_path / "outbox.log"
    channel = FileChannel(path)
    await channel.send(_message(), "k1")
    await channel.send(_message(), "k2")
    path.unlink()  # an operator cleared the development outbox
    await channel.send(_message(), "k1")
    assert channel.sent_keys() == ["k1"]
    other = FileChannel(path)  # a process that starts after the removal
    await other.send(_message(), "k2")
    await other.send(_message(), "k1")
    assert other.sent_keys() == ["k1", "k2"]
