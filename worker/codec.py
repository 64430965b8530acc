"""AES-256-GCM payload codec with a key ring, so payload keys can rotate.

Every payload the SDK sends to Temporal (workflow and activity inputs and results, signal,
update and query arguments, memo, and failure details when the failure converter encodes
them) is serialised, encrypted with the *active* key and wrapped in a new payload whose
metadata names the key: ``encoding=binary/encrypted`` and ``encryption-key-id=<id>``. Decoding
uses whichever key the metadata names, so a worker that holds the old and the new key reads
journeys started before a rotation. Workflow ids and search attributes are never encoded by
any codec: keep PHI out of them.

Key ring format (the ``JOURNEY_CODEC_KEYS`` setting): ``"k1:<base64 32 bytes>,k2:<base64>"``;
the active key id comes from ``JOURNEY_CODEC_ACTIVE_KEY``. Keys come from settings only; this
module holds no key.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

import temporalio.converter
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload

ENCODING_KEY = "encoding"
ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ID_METADATA_KEY = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12

_KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeyRingError(ValueError):
    """The key ring specification or the codec's keys are unusable (never names key bytes)."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload cannot be decrypted: unknown key id, or wrong key / tampered data.

    In a worker this fails the workflow or activity task, which Temporal retries; the journey
    waits (it does not fail) until a worker with the right key ring is deployed.
    """


def generate_key() -> str:
    """A new random AES-256 key for operators, as standard base64 of 32 bytes.

    Returns:
        The key text to put after ``<id>:`` in ``JOURNEY_CODEC_KEYS``.
    """
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def parse_key_ring(spec: str) -> dict[str, bytes]:
    """Parse ``"k1:<base64>,k2:<base64>"`` into ``{"k1": key_bytes, ...}``.

    Whitespace around entries is ignored. Order is kept (the dict preserves it).

    Raises:
        KeyRingError: the spec is empty; an entry has no ``:``; a key id is empty, repeated or
            not ``[A-Za-z0-9][A-Za-z0-9._-]*``; a key is not valid base64 or does not decode
            to exactly 32 bytes. The message names the key id, never the key.
    """
    keys: dict[str, bytes] = {}
    entries = [entry.strip() for entry in spec.split(",")]
    if not any(entries):
        raise KeyRingError("the key ring is empty: expected 'id:<base64 32-byte key>,...'")
    for position, entry in enumerate(entries, start=1):
        if not entry:
            raise KeyRingError(f"key ring entry {position} is empty (stray ',')")
        key_id, sep, encoded = (part.strip() for part in entry.partition(":"))
        if not sep:
            raise KeyRingError(f"key ring entry {position} has no ':' (expected 'id:<base64>')")
        if not _KEY_ID_RE.match(key_id):
            raise KeyRingError(
                f"key ring entry {position}: key id {key_id!r} must match {_KEY_ID_RE.pattern}"
            )
        if key_id in keys:
            raise KeyRingError(f"key id {key_id!r} appears more than once in the key ring")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyRingError(f"key {key_id!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise KeyRingError(
                f"key {key_id!r} decodes to {len(key)} bytes; AES-256 needs {KEY_BYTES}"
            )
        keys[key_id] = key
    return keys


class EncryptionCodec(temporalio.converter.PayloadCodec):
    """AES-256-GCM payload codec over a key ring.

    Guarantees: every payload is encoded with the active key and a fresh random 12-byte nonce
    (``data = nonce || ciphertext+tag``); decode accepts any key of the ring, so keys rotate
    without re-encrypting history; payloads not marked ``binary/encrypted`` pass through
    unchanged (histories written before encryption was switched on stay readable).

    Refuses: an encrypted payload whose key id is not in the ring, or whose data does not
    authenticate, with :class:`PayloadDecryptionError`.
    """

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        """Build the codec.

        Args:
            keys: Key id to 32-byte key, e.g. from :func:`parse_key_ring`.
            active_key_id: The id of the key new payloads are encrypted with.

        Raises:
            KeyRingError: no keys, a key that is not 32 bytes, or an active id not in ``keys``.
        """
        super().__init__()
        if not keys:
            raise KeyRingError("the codec needs at least one key")
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise KeyRingError(f"key {key_id!r} is {len(key)} bytes; AES-256 needs 32")
        if active_key_id not in keys:
            raise KeyRingError(
                f"active key id {active_key_id!r} is not in the key ring ({sorted(keys)})"
            )
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active_key_id = active_key_id
        self._active_key_id_bytes = active_key_id.encode()

    @property
    def active_key_id(self) -> str:
        """The id of the key new payloads are encrypted with."""
        return self._active_key_id

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of every key this codec can decrypt with."""
        return frozenset(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt every payload with the active key (see the class docstring)."""
        cipher = self._ciphers[self._active_key_id]
        encoded: list[Payload] = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            encoded.append(
                Payload(
                    metadata={
                        ENCODING_KEY: ENCRYPTED_ENCODING,
                        KEY_ID_METADATA_KEY: self._active_key_id_bytes,
                    },
                    data=nonce + cipher.encrypt(nonce, payload.SerializeToString(), None),
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt encrypted payloads with the key their metadata names; pass others through.

        Raises:
            PayloadDecryptionError: unknown key id, or the data does not authenticate.
        """
        decoded: list[Payload] = []
        for payload in payloads:
            if payload.metadata.get(ENCODING_KEY) != ENCRYPTED_ENCODING:
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID_METADATA_KEY, b"").decode(errors="replace")
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise PayloadDecryptionError(
                    f"payload is encrypted with key id {key_id!r}, which is not in this "
                    f"process's key ring {sorted(self._ciphers)}: add it to JOURNEY_CODEC_KEYS"
                )
            data = payload.data
            if len(data) <= NONCE_BYTES:
                raise PayloadDecryptionError(f"encrypted payload (key {key_id!r}) is truncated")
            try:
                plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
            except InvalidTag:
                raise PayloadDecryptionError(
                    f"payload encrypted with key id {key_id!r} does not authenticate: wrong key "
                    "bytes for that id, or the data was altered"
                ) from None
            decoded.append(Payload.FromString(plain))
        return decoded


def codec_from_settings(keys_spec: str | None, active_key_id: str | None) -> EncryptionCodec | None:
    """The codec for ``JOURNEY_CODEC_KEYS`` / ``JOURNEY_CODEC_ACTIVE_KEY``, or None when unset.

    With a single key, that key is active; with several, the active one must be named: guessing
    "first" or "last" silently would encrypt with the wrong key mid-rotation.

    Raises:
        KeyRingError: several keys and no active key id; and as :func:`parse_key_ring` and
            :class:`EncryptionCodec`.
    """
    if not keys_spec:
        return None
    keys = parse_key_ring(keys_spec)
    if not active_key_id:
        if len(keys) > 1:
            raise KeyRingError(
                f"JOURNEY_CODEC_KEYS holds {len(keys)} keys: set JOURNEY_CODEC_ACTIVE_KEY to "
                f"one of {list(keys)}"
            )
        active_key_id = next(iter(keys))
    return EncryptionCodec(keys, active_key_id)


def with_codec(
    base: temporalio.converter.DataConverter, codec: temporalio.converter.PayloadCodec
) -> temporalio.converter.DataConverter:
    """``base`` with ``codec`` and a failure converter that encodes messages and stack traces.

    By default Temporal stores a failure's message and stack trace in clear text; an exception
    message can carry data we must not leak, so the failure converter moves them into an
    encoded attributes payload (the UI shows them through the codec server).
    """
    return dataclasses.replace(
        base,
        payload_codec=codec,
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )
