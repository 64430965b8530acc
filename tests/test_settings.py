"""Settings: development defaults work out of the box; production refuses them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.codec import generate_key
from worker.settings import DEV_INTEGRATION_SECRET, DEV_PATIENT_LINK_SECRET, Settings

PRODUCTION = {
    "journey_env": "production",
    "journey_patient_link_secret": "a-real-secret-from-the-vault-0123456789",
    "journey_integration_secrets": {"emr": "another-real-secret"},
    "journey_codec_keys": f"k1:{generate_key()}",
    "journey_codec_active_key": "k1",
    "journey_public_url": "https://journey.clinic.example",
}


def test_development_defaults() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.temporal_task_queue == "patient-journey"
    assert s.journey_patient_link_secret == DEV_PATIENT_LINK_SECRET
    assert s.journey_integration_secrets == {"dev": DEV_INTEGRATION_SECRET}
    assert s.database_url is None  # the embedded server


def test_production_accepts_real_secrets() -> None:
    assert Settings(_env_file=None, **PRODUCTION).journey_env == "production"  # type: ignore[arg-type, call-arg]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("journey_patient_link_secret", DEV_PATIENT_LINK_SECRET, "JOURNEY_PATIENT_LINK_SECRET"),
        (
            "journey_integration_secrets",
            {"dev": DEV_INTEGRATION_SECRET},
            "JOURNEY_INTEGRATION_SECRETS",
        ),
        ("journey_codec_keys", None, "JOURNEY_CODEC_KEYS"),
        ("journey_public_url", "http://journey.clinic.example", "JOURNEY_PUBLIC_URL"),
    ],
)
def test_production_refuses_development_secrets(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, **{**PRODUCTION, field: value})  # type: ignore[arg-type, call-arg]
