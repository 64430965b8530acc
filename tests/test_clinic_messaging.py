"""The clinic file's ``[messaging]`` section (activities/clinic_messaging.py): quiet hours, the
essential kinds and the patients' default language, loaded by ``journey clinic add`` into the
clinic's row (never into the protocol a journey's history carries); bad values are refused with
the field's path."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import time
from pathlib import Path

import asyncpg
import pytest

from activities.clinic_messaging import (
    ClinicMessaging,
    MessagingFileError,
    apply_messaging,
    messaging_from_file,
)
from workflows.protocol import load_clinic_protocol

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "clinic.toml"


def clinic_file(tmp_path: Path, messaging: str) -> Path:
    path = tmp_path / "clinic.toml"
    path.write_text(f'[clinic]\nclinic_id = "msg-clinic"\n\n[messaging]\n{messaging}\n')
    return path


def test_the_section_is_read_and_kept_out_of_the_protocol(tmp_path: Path) -> None:
    section = messaging_from_file(EXAMPLE)
    assert section is not None
    assert section.quiet_hours == (time(20), time(8)) and section.language == "fr"
    assert "aftercare" in (section.essential_kinds or [])
    assert "messaging" not in load_clinic_protocol(EXAMPLE).model_dump()
    off = messaging_from_file(clinic_file(tmp_path, 'quiet_hours = "off"'))
    assert off is not None and off.quiet_hours == (time(0), time(0))


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('quiet_hours = "8pm-8am"', "messaging.quiet_hours"),
        ('quiet_hours = "20:00"', "messaging.quiet_hours"),
        ('essential_kinds = ["staff_alert"]', "messaging.essential_kinds"),
        ('essential_kinds = ["pizza"]', "messaging.essential_kinds"),
        ('language = "tlh"', "messaging.language"),
        ("quiet = 1", "messaging.quiet: unknown key"),
    ],
)
def test_bad_values_are_refused_with_the_field(tmp_path: Path, text: str, path: str) -> None:
    with pytest.raises(MessagingFileError) as err:
        messaging_from_file(clinic_file(tmp_path, text))
    assert any(path in line for line in err.value.problems), err.value.problems


async def _row(pool: asyncpg.Pool, clinic_id: str) -> asyncpg.Record:
    row: asyncpg.Record = await pool.fetchrow(
        "SELECT quiet_hours_start, quiet_hours_end, essential_kinds, default_language "
        "FROM clinics WHERE clinic_id = $1",
        clinic_id,
    )
    return row


async def test_clinic_add_stores_it_and_a_partial_section_keeps_the_rest(
    pg_pool: asyncpg.Pool, pg_dsn: str
) -> None:
    # The process commands leave with os._exit: run the installed command in its own process.
    exe = str(Path(sys.executable).parent / "journey")
    env = {**os.environ, "DATABASE_URL": pg_dsn, "JOURNEY_ENV": "test"}
    r = await asyncio.to_thread(
        subprocess.run,
        [exe, "clinic", "add", str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "scheduling resource" in r.stdout
    row = await _row(pg_pool, "paris-01")
    assert (row["quiet_hours_start"], row["quiet_hours_end"]) == (time(20), time(8))
    assert row["default_language"] == "fr"
    assert "session_rebooked" in row["essential_kinds"]
    await apply_messaging(pg_pool, "paris-01", ClinicMessaging.model_validate({"language": "de"}))
    row = await _row(pg_pool, "paris-01")
    assert row["default_language"] == "de" and row["quiet_hours_start"] == time(20)
    assert "session_rebooked" in row["essential_kinds"]
