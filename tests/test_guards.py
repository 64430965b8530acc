"""The guard table itself: closed stages accept and lead nowhere, every open stage can be
paused and withdrawn, refusals name the stage, and the pages' list matches the validators'."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workflows.guards import (
    ACCEPTS,
    CLOSED_STAGES,
    OPEN_STAGES,
    STAGES,
    TRANSITIONS,
    accepts,
    available_requests,
    may_move,
    refusal,
)

WHATS = sorted(ACCEPTS)


def test_every_stage_has_its_moves() -> None:
    assert set(TRANSITIONS) == set(STAGES)
    for stage in CLOSED_STAGES:
        assert TRANSITIONS[stage] == frozenset()
    for stage in OPEN_STAGES - {"paused"}:
        assert "paused" in TRANSITIONS[stage]
        assert "withdrawn" in TRANSITIONS[stage]
    assert "withdrawn" in TRANSITIONS["paused"]


def test_closed_stages_accept_nothing() -> None:
    for stage in CLOSED_STAGES:
        assert available_requests(stage) == []
        for what in WHATS:
            reason = refusal(what, stage)
            assert reason is not None and reason.rule == "journey_closed"


@given(st.sampled_from(WHATS), st.sampled_from(STAGES))
def test_refusal_agrees_with_accepts(what: str, stage: str) -> None:
    reason = refusal(what, stage)
    assert (reason is None) == accepts(what, stage)
    if reason is not None and stage not in CLOSED_STAGES:
        assert stage.replace("_", " ") in reason.message


@given(st.sampled_from(STAGES), st.sampled_from(STAGES))
def test_may_move_only_along_the_table(src: str, dst: str) -> None:
    assert may_move(src, dst) == (src == dst or dst in TRANSITIONS[src])
    if src in CLOSED_STAGES:
        assert may_move(src, dst) == (src == dst)


def test_resume_only_from_paused_and_pause_never_twice() -> None:
    assert [s for s in STAGES if accepts("resume", s)] == ["paused"]
    assert not accepts("pause", "paused")
