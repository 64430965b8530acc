"""Channel adapters: how a rendered message leaves the product.

Each ``send`` receives a provider key, stable for one outbox row across every resend. A real
provider uses it as its idempotency key; :class:`FileChannel` does the same (it never writes a
provider key twice), so a resend after a crash between send and mark delivers nothing twice.
SMTP has no such key: :class:`SmtpChannel` sets it as the ``Message-ID`` (mail clients and many
relays drop a second message with the same id), which narrows but cannot close that window.
:class:`SmsChannel` (a Twilio-compatible REST API) sends it as the ``Idempotency-Key`` header;
a provider that honours the header (our fake in the tests does) answers a repeat with the first
message's sid and sends nothing. docs/messaging.md has the settings and what each failure does.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import html
import json
import os
import threading
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import aiosmtplib
import httpx
from pydantic import BaseModel, ConfigDict

ChannelName = Literal["email", "sms", "staff"]


class Attachment(BaseModel):
    """A file sent with a message (the booking's ``.ics``; see :mod:`activities.ics`)."""

    model_config = ConfigDict(frozen=True)

    filename: str
    content_type: str  # e.g. "text/calendar; method=REQUEST"
    content: str


class OutgoingMessage(BaseModel):
    """One rendered message and where it goes (``to``: an address, a phone number, or
    ``staff``), with its attachments (e-mail only)."""

    model_config = ConfigDict(frozen=True)

    channel: ChannelName
    to: str
    subject: str
    body: str
    attachments: tuple[Attachment, ...] = ()
    sender_name: str | None = None  # the clinic's name, shown as the e-mail's sender
    language: str = "en"  # the patient's language: Content-Language and <html lang>


DeliveryStatus = Literal["queued", "sent", "delivered", "failed"]
# A Twilio-compatible provider's message states, as ours ("failed" carries the error code).
PROVIDER_STATUSES: dict[str, DeliveryStatus] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "failed": "failed",
    "undelivered": "failed",
    "canceled": "failed",
}


class Sent(BaseModel):
    """What a provider answered to an accepted message: its own id (which its status callbacks
    name) and the message's state (``queued`` at an SMS provider, ``sent`` for accepted mail)."""

    model_config = ConfigDict(frozen=True)

    provider_message_id: str
    status: DeliveryStatus


class PermanentDeliveryError(Exception):
    """The channel can never deliver this message (e.g. no SMS provider); the dispatcher marks
    the row failed at once instead of retrying."""


class Channel(Protocol):
    """Delivers messages; ``send`` raises on failure (retried later with backoff) or
    :class:`PermanentDeliveryError` (never retried)."""

    async def send(self, message: OutgoingMessage, provider_key: str) -> Sent | None:
        """Deliver ``message``; a repeat with the same ``provider_key`` must not deliver twice
        where the channel can tell. Returns the provider's receipt, if it gives one."""
        ...


class FileChannel:
    """Writes one JSON line per message to a file instead of sending it (development default).

    Idempotent by provider key: a key already in the file is not written again. The keys sent
    are kept in an index beside the file (``<file>.index``, one ``[end offset, key]`` JSON line
    per message) and in memory, so a message costs the same whatever the file's size: each send
    reads only what other writers appended to the index since this channel last looked, and
    only the outbox's tail past the last indexed offset (a message written by a writer that
    crashed before indexing it), which it then indexes. The check and the appends hold an
    exclusive ``flock`` on the outbox, so several dispatchers (threads or processes) may share
    the file. An outbox that shrank (deleted or truncated by an operator) starts a fresh index.
    The file holds names and addresses: it lives under the git-ignored data folder.
    """

    def __init__(self, path: Path) -> None:
        """Args:
        path: The file to append to (its folder is created on first send).
        """
        self.path = path
        self.index_path = path.with_name(path.name + ".index")
        self._keys: set[str] = set()
        self._index_read = 0  # bytes of the index file already folded into _keys
        self._covered = 0  # outbox bytes whose keys are all in _keys
        self._lock = threading.Lock()  # this object's state, across to_thread calls

    async def send(self, message: OutgoingMessage, provider_key: str) -> None:
        """Append the message unless its provider key was written before."""
        await asyncio.to_thread(self._append, message, provider_key)

    def _append(self, message: OutgoingMessage, provider_key: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("ab+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                with self.index_path.open("ab+") as index:
                    self._catch_up(file, index)
                    if provider_key in self._keys:
                        return
                    record: dict[str, object] = {
                        "provider_key": provider_key,
                        "channel": message.channel,
                        "to": message.to,
                        "subject": message.subject,
                        "body": message.body,
                        "written_at": datetime.now(UTC).isoformat(),
                    }
                    if message.attachments:
                        record["attachments"] = [a.model_dump() for a in message.attachments]
                    end = file.seek(0, os.SEEK_END)
                    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
                    if end and _last_byte(file, end) != b"\n":
                        line = b"\n" + line  # a torn line from a crash stays on its own
                    file.write(line)
                    file.flush()
                    self._remember(index, provider_key, end + len(line))
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)

    def _catch_up(self, file: BinaryIO, index: BinaryIO) -> None:
        """Fold in what other writers appended since this channel last looked."""
        size = file.seek(0, os.SEEK_END)
        index_size = index.seek(0, os.SEEK_END)
        if size < self._covered or index_size < self._index_read:
            self._keys.clear()  # the outbox or its index was truncated or replaced
            self._index_read = self._covered = 0
        index.seek(self._index_read)
        for raw in index.read().splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                break  # a torn last entry: its message is found in the outbox's tail below
            self._index_read += len(raw)
            try:
                end, key = json.loads(raw)
            except (ValueError, TypeError):
                continue
            self._keys.add(str(key))
            self._covered = max(self._covered, int(end))
        if self._covered > size:
            # An index that names bytes the outbox no longer has: start again from the outbox.
            index.truncate(0)
            self._keys.clear()
            self._index_read = self._covered = 0
        if size > self._covered:
            file.seek(self._covered)
            offset = self._covered
            for raw in file.read().splitlines(keepends=True):
                offset += len(raw)
                try:
                    key = json.loads(raw).get("provider_key")
                except (ValueError, AttributeError):
                    continue  # a torn line from a crash mid-write is not a match
                if isinstance(key, str):
                    self._remember(index, key, offset)
            self._covered = size

    def _remember(self, index: BinaryIO, key: str, end: int) -> None:
        index.seek(0, os.SEEK_END)
        entry = (json.dumps([end, key], ensure_ascii=False) + "\n").encode()
        index.write(entry)
        index.flush()
        self._index_read = index.tell()
        self._keys.add(key)
        self._covered = max(self._covered, end)

    def sent_keys(self) -> list[str]:
        """The provider keys in the file, in order (for tests and operators)."""
        if not self.path.exists():
            return []
        keys: list[str] = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                keys.append(json.loads(line)["provider_key"])
            except (json.JSONDecodeError, KeyError):
                continue
        return keys


def _last_byte(file: BinaryIO, size: int) -> bytes:
    file.seek(size - 1)
    last = file.read(1)
    file.seek(0, os.SEEK_END)
    return last


class SmtpChannel:
    """E-mail over SMTP with ``aiosmtplib``: a text and an HTML part, the attachments (the
    booking's ``.ics``), and the clinic's name as the sender's display name.

    Port 465 uses implicit TLS; otherwise STARTTLS is used when the server offers it. Staff
    alerts go to ``staff_to`` (the sender address unless given). SMS is refused with
    :class:`PermanentDeliveryError` (:class:`RoutingChannel` sends it to the SMS provider). A
    5xx answer (a refused recipient, a rejected message) is permanent; anything else (4xx, a
    timeout, a refused connection) is retried by the dispatcher.
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str | None,
        password: str | None,
        sender: str,
        *,
        staff_to: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.sender = sender
        self.staff_to = staff_to or sender
        # Shorter than the dispatcher's lease, so a hung server cannot outlive the lease.
        self.timeout = timeout

    async def send(self, message: OutgoingMessage, provider_key: str) -> Sent:
        """Send one e-mail whose ``Message-ID`` derives from the provider key."""
        if message.channel == "sms":
            raise PermanentDeliveryError("no SMS provider is configured")
        email = self.build(message, provider_key)
        try:
            await aiosmtplib.send(
                email,
                hostname=self.host,
                port=self.port,
                username=self.user or None,
                password=(self.password or "") if self.user else None,
                use_tls=self.port == 465,
                start_tls=None if self.port != 465 else False,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [r.code for r in error.recipients]
            if all(500 <= c < 600 for c in codes):
                raise PermanentDeliveryError(f"recipient refused: {codes}") from error
            raise
        except aiosmtplib.SMTPResponseException as error:
            if 500 <= error.code < 600:
                raise PermanentDeliveryError(f"SMTP {error.code}: {error.message}") from error
            raise
        return Sent(provider_message_id=str(email["Message-ID"]), status="sent")

    def build(self, message: OutgoingMessage, provider_key: str) -> EmailMessage:
        """The e-mail: ``multipart/mixed`` of the text/HTML alternative and the attachments."""
        email = EmailMessage()
        email["From"] = (
            Address(display_name=message.sender_name, addr_spec=self.sender)
            if message.sender_name
            else self.sender
        )
        email["To"] = self.staff_to if message.channel == "staff" else message.to
        email["Subject"] = message.subject
        email["Message-ID"] = message_id(provider_key, self.sender)
        email["X-Idempotency-Key"] = provider_key
        email["Content-Language"] = message.language
        email.set_content(message.body)
        email.add_alternative(
            as_html(message.subject, message.body, message.language), subtype="html"
        )
        for a in message.attachments:
            maintype, _, rest = a.content_type.partition("/")
            subtype, *options = (part.strip() for part in rest.split(";"))
            email.add_attachment(
                a.content.encode(),
                maintype=maintype,
                subtype=subtype,
                filename=a.filename,
                params=dict(o.split("=", 1) for o in options if "=" in o),
            )
        return email


def as_html(subject: str, body: str, language: str = "en") -> str:
    """The HTML part of a message: the plain text, escaped, one ``<p>`` per paragraph, in the
    patient's language (``<html lang>``)."""
    paragraphs = "".join(
        "<p>" + html.escape(p.strip()).replace("\n", "<br>") + "</p>\n"
        for p in body.split("\n\n")
        if p.strip()
    )
    return (
        f'<!doctype html>\n<html lang="{html.escape(language)}"><head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head>\n"
        f'<body style="font-family: sans-serif; line-height: 1.5">\n{paragraphs}</body></html>\n'
    )


class SmsChannel:
    """SMS through a Twilio-compatible REST API:
    ``POST {base_url}/2010-04-01/Accounts/{account}/Messages.json`` (form ``To``, ``From`` or
    ``MessagingServiceSid``, ``Body``, ``StatusCallback``) with HTTP basic auth
    ``account:token``.

    The provider key goes as the ``Idempotency-Key`` header (see the module docstring). A 4xx
    answer other than 408/429 is permanent (an invalid or unreachable number, a refused
    sender); 408, 429, 5xx and network errors are retried by the dispatcher.
    """

    def __init__(
        self,
        base_url: str,
        account: str,
        token: str,
        sender: str,
        *,
        status_callback: str | None = None,
        timeout: float = 15.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account}/Messages.json"
        self.auth = httpx.BasicAuth(account, token)
        self.sender = sender
        self.status_callback = status_callback
        self.timeout = timeout
        self._client = client

    async def send(self, message: OutgoingMessage, provider_key: str) -> Sent:
        """Create one message at the provider; returns its sid and status."""
        if message.channel != "sms":
            raise PermanentDeliveryError(f"the SMS channel cannot send {message.channel}")
        form = {"To": message.to, "Body": message.body}
        form["MessagingServiceSid" if self.sender.startswith("MG") else "From"] = self.sender
        if self.status_callback:
            form["StatusCallback"] = self.status_callback
        headers = {"Idempotency-Key": provider_key}
        if self._client is not None:
            response = await self._client.post(
                self.url, data=form, auth=self.auth, headers=headers, timeout=self.timeout
            )
        else:
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    self.url, data=form, auth=self.auth, headers=headers, timeout=self.timeout
                )
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            raise PermanentDeliveryError(
                f"SMS provider {response.status_code}: {_reason(response)}"
            )
        response.raise_for_status()
        answer = response.json()
        return Sent(
            provider_message_id=str(answer["sid"]),
            status=PROVIDER_STATUSES.get(str(answer.get("status")), "queued"),
        )


def _reason(response: httpx.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return response.text[:200]
    return f"{answer.get('code', '')} {answer.get('message', '')}".strip()[:200]


class RoutingChannel:
    """Sends each message through the channel for its kind: ``email`` and ``staff`` by e-mail,
    ``sms`` by the SMS provider (refused for good when none is configured)."""

    def __init__(self, email: Channel, sms: Channel | None) -> None:
        self.email = email
        self.sms = sms

    async def send(self, message: OutgoingMessage, provider_key: str) -> Sent | None:
        """Route ``message`` by its channel."""
        if message.channel == "sms":
            if self.sms is None:
                raise PermanentDeliveryError("no SMS provider is configured")
            return await self.sms.send(message, provider_key)
        return await self.email.send(message, provider_key)


def message_id(provider_key: str, sender: str) -> str:
    """A valid RFC 5322 ``Message-ID`` that is the same for every resend of one outbox row
    (provider keys contain ``:`` and ``+``, which a message id may not)."""
    domain = sender.rpartition("@")[2] or "pore-journey.invalid"
    digest = hashlib.sha256(provider_key.encode()).hexdigest()[:40]
    return f"<{digest}@{domain}>"
