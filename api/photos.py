"""Clinical photos (issue 19 item 2): baseline photos before session 1 and photos at the review.

* Uploads are checked (size, a real JPEG or PNG of at most ``max_pixels``) and **re-encoded**
  without any metadata: EXIF (GPS location, camera serial, time), XMP, comments and ICC
  profiles are dropped; the EXIF orientation is applied to the pixels first, so the photo
  still shows upright.
* The cleaned bytes are stored by their sha256 (content-addressed) in a :class:`PhotoStore`:
  :class:`LocalPhotoStore` (default: ``JOURNEY_DATA_DIR/photos/ab/cd/<sha256>``) or
  :class:`S3PhotoStore` (an S3-compatible bucket, SigV4-signed requests over httpx), chosen by
  ``JOURNEY_PHOTO_STORE``. PostgreSQL keeps the reference (``photos``: the hash, the store,
  the type, size and pixels, who uploaded it); Temporal never sees a photo or its hash.
* Every view of a photo is written to ``photo_views`` (append-only) and, when the general
  access log of issue 16 exists (``access_log``), there too, in the same transaction: no photo
  is served whose view could not be logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, Protocol
from urllib.parse import urlsplit

import asyncpg
import httpx
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from activities.repository import StaffRow
from worker.settings import Settings
from workflows.ids import workflow_id

__all__ = [
    "LocalPhotoStore",
    "PhotoKind",
    "PhotoRefused",
    "PhotoRow",
    "PhotoSettings",
    "PhotoStore",
    "S3PhotoStore",
    "build_store",
    "clean_photo",
]

PhotoKind = Literal["baseline", "review"]
PHOTO_KINDS: Final[dict[str, str]] = {"baseline": "Baseline", "review": "Review"}
MEDIA_TYPES: Final[dict[str, str]] = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png"}
# A multipart body carries the file and a few fields: the body limit is the photo limit plus this.
MULTIPART_OVERHEAD: Final = 16 * 1024


class PhotoSettings(BaseSettings):
    """``JOURNEY_PHOTO_*`` (read from the environment or ``.env`` like :class:`Settings`)."""

    model_config = SettingsConfigDict(
        env_prefix="JOURNEY_PHOTO_", env_file=".env", extra="ignore", case_sensitive=False
    )

    store: Literal["local", "s3"] = "local"
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    # The local store's folder; unset: JOURNEY_DATA_DIR/photos.
    dir: Path | None = None
    s3_endpoint: str = ""  # e.g. https://s3.eu-central-1.amazonaws.com or a MinIO URL
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_prefix: str = "photos/"
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")


class PhotoRefused(Exception):
    """An upload that cannot be kept (HTTP 413 for the size, else 422)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message

    @property
    def status_code(self) -> int:
        return {"photo_too_large": 413, "photo_not_now": 409}.get(self.rule, 422)


@dataclass(frozen=True)
class CleanPhoto:
    """A checked photo, re-encoded without metadata."""

    data: bytes
    sha256: str
    media_type: str
    width: int
    height: int


def clean_photo(
    data: bytes, *, declared_type: str | None, max_bytes: int, max_pixels: int
) -> CleanPhoto:
    """Check an upload and re-encode it without metadata.

    Raises:
        PhotoRefused: empty or larger than ``max_bytes`` (``photo_too_large``), not a JPEG or
            PNG (``photo_type``, also when the declared type says otherwise), more pixels than
            ``max_pixels`` (``photo_pixels``), or unreadable (``photo_unreadable``).
    """
    if not data:
        raise PhotoRefused("photo_empty", "The file is empty.")
    if len(data) > max_bytes:
        raise PhotoRefused(
            "photo_too_large", f"The photo is larger than {max_bytes // (1024 * 1024)} MB."
        )
    try:
        with Image.open(io.BytesIO(data)) as opened:
            media_type = MEDIA_TYPES.get(opened.format or "")
            if media_type is None:
                raise PhotoRefused("photo_type", "Only JPEG and PNG photos are accepted.")
            if declared_type and declared_type.split(";")[0].strip().lower() != media_type:
                raise PhotoRefused(
                    "photo_type",
                    f"The file is a {media_type} but was sent as {declared_type[:40]}.",
                )
            width, height = opened.size
            if width * height > max_pixels:
                raise PhotoRefused(
                    "photo_pixels", f"The photo has more than {max_pixels:,} pixels."
                )
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            upright.info = {}  # the PNG writer falls back to it for an ICC profile
            out = io.BytesIO()
            # Saved without exif=, icc_profile= or pnginfo=: nothing but the pixels is written.
            if media_type == "image/jpeg":
                if upright.mode not in ("RGB", "L"):
                    upright = upright.convert("RGB")
                upright.save(out, "JPEG", quality=92)
            else:
                upright.save(out, "PNG")
            width, height = upright.size
    except PhotoRefused:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise PhotoRefused("photo_type", "Only JPEG and PNG photos are accepted.") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise PhotoRefused("photo_unreadable", "The photo could not be read.") from None
    cleaned = out.getvalue()
    return CleanPhoto(
        data=cleaned,
        sha256=hashlib.sha256(cleaned).hexdigest(),
        media_type=media_type,
        width=width,
        height=height,
    )


# ---------------------------------------------------------------- stores


class PhotoStore(Protocol):
    """Where photo bytes live, by their sha256."""

    name: Literal["local", "s3"]

    async def put(self, sha256: str, data: bytes, media_type: str) -> None:
        """Store ``data`` under its hash (a repeat is a no-op)."""
        ...

    async def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256`` (``FileNotFoundError`` when missing)."""
        ...


def _checked_hash(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")
    return sha256


class LocalPhotoStore:
    """A content-addressed folder: ``root/ab/cd/<sha256>``, written atomically."""

    name: Literal["local", "s3"] = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, sha256: str) -> Path:
        h = _checked_hash(sha256)
        return self.root / h[:2] / h[2:4] / h

    def _put(self, sha256: str, data: bytes) -> None:
        path = self.path_of(sha256)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    async def put(self, sha256: str, data: bytes, media_type: str) -> None:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError("the data does not match its hash")
        await asyncio.to_thread(self._put, sha256, data)

    async def get(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self.path_of(sha256).read_bytes)


def sigv4_headers(
    method: str,
    url: str,
    payload_sha256: str,
    *,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    now: datetime,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """AWS Signature Version 4 headers for an S3 request (path-style URL, no query)."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    headers = {
        "host": parts.netloc,
        "x-amz-content-sha256": payload_sha256,
        "x-amz-date": amz_date,
        **{k.lower(): v for k, v in (extra or {}).items()},
    }
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            parts.query,
            "".join(f"{n}:{headers[n].strip()}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_access_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del headers["host"]  # httpx sets it from the URL
    return headers


class S3PhotoStore:
    """An S3-compatible bucket (AWS S3, MinIO, Ceph...), path-style, SigV4-signed."""

    name: Literal["local", "s3"] = "s3"

    def __init__(self, settings: PhotoSettings, client: httpx.AsyncClient | None = None) -> None:
        if not (settings.s3_endpoint and settings.s3_bucket):
            raise ValueError("JOURNEY_PHOTO_S3_ENDPOINT and JOURNEY_PHOTO_S3_BUCKET are required")
        self.settings = settings
        self._client = client or httpx.AsyncClient(timeout=30)

    def _url(self, sha256: str) -> str:
        s = self.settings
        return f"{s.s3_endpoint.rstrip('/')}/{s.s3_bucket}/{s.s3_prefix}{_checked_hash(sha256)}"

    def _headers(
        self, method: str, url: str, payload: str, extra: dict[str, str]
    ) -> dict[str, str]:
        s = self.settings
        return sigv4_headers(
            method,
            url,
            payload,
            access_key_id=s.s3_access_key_id,
            secret_access_key=s.s3_secret_access_key.get_secret_value(),
            region=s.s3_region,
            now=datetime.now(UTC),
            extra=extra,
        )

    async def put(self, sha256: str, data: bytes, media_type: str) -> None:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError("the data does not match its hash")
        url = self._url(sha256)
        r = await self._client.put(
            url,
            content=data,
            headers=self._headers("PUT", url, sha256, {"content-type": media_type}),
        )
        r.raise_for_status()

    async def get(self, sha256: str) -> bytes:
        url = self._url(sha256)
        empty = hashlib.sha256(b"").hexdigest()
        r = await self._client.get(url, headers=self._headers("GET", url, empty, {}))
        if r.status_code == 404:
            raise FileNotFoundError(sha256)
        r.raise_for_status()
        if hashlib.sha256(r.content).hexdigest() != sha256:
            raise OSError("the stored photo does not match its hash")
        return r.content


def build_store(settings: Settings, photo: PhotoSettings | None = None) -> PhotoStore:
    """The store the settings name (``JOURNEY_PHOTO_STORE``)."""
    photo = photo or PhotoSettings()
    if photo.store == "s3":
        return S3PhotoStore(photo)
    return LocalPhotoStore(photo.dir or settings.journey_data_dir / "photos")


# ---------------------------------------------------------------- references in PostgreSQL


class PhotoRow(BaseModel):
    """A photo's reference (never its bytes)."""

    model_config = ConfigDict(frozen=True)

    id: int
    patient_id: str
    clinic_id: str
    course_number: int
    kind: PhotoKind
    sha256: str
    store: str
    media_type: str
    bytes: int
    width: int
    height: int
    note: str | None
    uploader_name: str
    uploaded_at: datetime


async def insert_photo(
    pool: asyncpg.Pool,
    *,
    patient_id: str,
    clinic_id: str,
    course_number: int,
    kind: PhotoKind,
    photo: CleanPhoto,
    store: str,
    note: str | None,
    staff: StaffRow,
) -> PhotoRow:
    row = await pool.fetchrow(
        """
        INSERT INTO photos (workflow_id, patient_id, clinic_id, course_number, kind, sha256,
                            store, media_type, bytes, width, height, note, uploaded_by,
                            uploader_name)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        RETURNING *
        """,
        workflow_id(patient_id),
        patient_id,
        clinic_id,
        course_number,
        kind,
        photo.sha256,
        store,
        photo.media_type,
        len(photo.data),
        photo.width,
        photo.height,
        note,
        staff.id,
        staff.name,
    )
    assert row is not None
    return PhotoRow.model_validate(dict(row))


async def list_photos(pool: asyncpg.Pool, patient_id: str) -> list[PhotoRow]:
    rows = await pool.fetch(
        "SELECT * FROM photos WHERE workflow_id = $1 ORDER BY kind, id", workflow_id(patient_id)
    )
    return [PhotoRow.model_validate(dict(r)) for r in rows]


async def get_photo(pool: asyncpg.Pool, patient_id: str, photo_id: int) -> PhotoRow | None:
    row = await pool.fetchrow(
        "SELECT * FROM photos WHERE workflow_id = $1 AND id = $2",
        workflow_id(patient_id),
        photo_id,
    )
    return None if row is None else PhotoRow.model_validate(dict(row))


async def log_view(
    pool: asyncpg.Pool,
    photo: PhotoRow,
    staff: StaffRow,
    route: str,
    *,
    also_access_log: bool = True,
) -> None:
    """Write the view to ``photo_views`` and, when issue 16's ``access_log`` exists and the
    request was not logged there already (``also_access_log``), there too; one transaction: a
    view that cannot be logged is not served."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO photo_views (photo_id, patient_id, sha256, staff_id, staff_name,
                                     staff_role, route)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            """,
            photo.id,
            photo.patient_id,
            photo.sha256,
            staff.id,
            staff.name,
            staff.role,
            route,
        )
        if also_access_log and await conn.fetchval("SELECT to_regclass('access_log') IS NOT NULL"):
            await conn.execute(
                """
                INSERT INTO access_log (staff_id, action, permission, route, patient_id,
                                        clinic_id)
                VALUES ($1, 'view', 'photos.view', $2, $3, $4)
                """,
                staff.id,
                route,
                photo.patient_id,
                photo.clinic_id,
            )


async def photo_views(
    pool: asyncpg.Pool, patient_id: str, limit: int = 20
) -> list[dict[str, object]]:
    """The newest views of the journey's photos (who, when, which)."""
    rows = await pool.fetch(
        "SELECT photo_id, staff_name, staff_role, route, viewed_at FROM photo_views "
        "WHERE patient_id = $1 ORDER BY viewed_at DESC, id DESC LIMIT $2",
        patient_id,
        limit,
    )
    return [dict(r) for r in rows]


def kind_allowed_now(
    kind: PhotoKind, stage: str, sessions_done: int, paused_from: str | None
) -> str | None:
    """Why a photo of ``kind`` cannot be taken now, or None: baseline photos before the
    course's first session, review photos at the review (awaiting it, or after it)."""
    at = paused_from if stage == "paused" and paused_from else stage
    if kind == "baseline":
        if sessions_done == 0 and at not in ("withdrawn", "excluded", "completed"):
            return None
        return "Baseline photos are taken before the first session of the course."
    if at in ("awaiting_review", "completed"):
        return None
    return "Review photos are taken at the review (once the journey awaits it)."


async def upload(
    pool: asyncpg.Pool,
    store: PhotoStore,
    limits: PhotoSettings,
    *,
    patient_id: str,
    kind: PhotoKind,
    data: bytes,
    declared_type: str | None,
    note: str | None,
    staff: StaffRow,
) -> PhotoRow:
    """Check, clean, store and reference one photo of the journey.

    Raises:
        LookupError: no journey for ``patient_id``.
        PhotoRefused: the photo (size, type, pixels) or the moment (``photo_not_now``).
    """
    row = await pool.fetchrow(
        "SELECT clinic_id, stage, course_number, sessions_done, status->>'paused_from' AS pf "
        "FROM journeys WHERE workflow_id = $1",
        workflow_id(patient_id),
    )
    if row is None:
        raise LookupError(patient_id)
    why = kind_allowed_now(kind, row["stage"], row["sessions_done"], row["pf"])
    if why is not None:
        raise PhotoRefused("photo_not_now", why)
    photo = await asyncio.to_thread(
        clean_photo,
        data,
        declared_type=declared_type,
        max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels,
    )
    await store.put(photo.sha256, photo.data, photo.media_type)
    return await insert_photo(
        pool,
        patient_id=patient_id,
        clinic_id=row["clinic_id"],
        course_number=row["course_number"],
        kind=kind,
        photo=photo,
        store=store.name,
        note=note,
        staff=staff,
    )
