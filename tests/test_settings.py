"""Settings: development defaults work out of the box; production refuses them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.client import connect_config
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
    assert s.journey_patient_link_secret.get_secret_value() == DEV_PATIENT_LINK_SECRET
    assert s.integration_secrets() == {"dev": DEV_INTEGRATION_SECRET}
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


SECRETS = {
    "temporal_api_key": "tmprl-api-key-do-not-print",
    "smtp_password": "smtp-password-do-not-print",
    "sms_auth_token": "sms-token-do-not-print",
    "mail_relay_secret": "mail-relay-secret-do-not-print",
    "journey_patient_link_secret": "link-secret-do-not-print",
    "journey_codec_keys": f"k1:{generate_key()}",
    "journey_integration_secrets": {"emr": "hmac-secret-do-not-print"},
}


def test_secrets_never_appear_in_repr_or_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings(_env_file=None, **SECRETS)  # type: ignore[arg-type, call-arg]
    logging.getLogger("test").warning("settings: %s %r", s, s)
    shown = repr(s) + str(s) + caplog.text + s.model_dump_json()
    for value in (*[v for v in SECRETS.values() if isinstance(v, str)], "hmac-secret"):
        assert value.split(":")[-1] not in shown
    assert s.smtp_password is not None
    assert s.smtp_password.get_secret_value() == SECRETS["smtp_password"]
    assert s.integration_secrets() == {"emr": "hmac-secret-do-not-print"}


def test_temporal_connection_from_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "ns.acct.tmprl.cloud:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "ns.acct")
    monkeypatch.setenv("TEMPORAL_API_KEY", "key-1")
    config = connect_config(Settings(_env_file=None))  # type: ignore[call-arg]
    assert config["target_host"] == "ns.acct.tmprl.cloud:7233"
    assert config["namespace"] == "ns.acct"
    assert config["api_key"] == "key-1"
    assert config["tls"] is True


def test_temporal_profile_from_config_file_and_env_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("CERT")
    key.write_text("KEY")
    config_file = tmp_path / "temporal.toml"
    config_file.write_text(
        "[profile.default]\n"
        'address = "localhost:7233"\n'
        "[profile.clinic]\n"
        'address = "temporal.clinic.internal:7233"\n'
        'namespace = "pore-journey"\n'
        "[profile.clinic.tls]\n"
        f'client_cert_path = "{cert}"\n'
        f'client_key_path = "{key}"\n'
    )
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("TEMPORAL_PROFILE", "clinic")
    config = connect_config(Settings(_env_file=None))  # type: ignore[call-arg]
    assert config["target_host"] == "temporal.clinic.internal:7233"
    assert config["namespace"] == "pore-journey"
    tls = config["tls"]
    assert tls.client_cert == b"CERT"
    assert tls.client_private_key == b"KEY"
    # A variable (or a caller's setting) overrides the profile, as in the SDK.
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "sandbox")
    overridden = Settings(_env_file=None).model_copy(update={"temporal_address": "127.0.0.1:1"})  # type: ignore[call-arg]
    config = connect_config(overridden)
    assert (config["target_host"], config["namespace"]) == ("127.0.0.1:1", "sandbox")


def test_old_tls_names_are_read_with_a_deprecation_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("CERT")
    key.write_text("KEY")
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT", str(cert))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY", str(key))
    with caplog.at_level(logging.WARNING, logger="worker.settings"):
        s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.temporal_tls_client_cert_path == cert
    assert s.temporal_tls_client_key_path == key
    assert (
        "TEMPORAL_TLS_CLIENT_CERT is deprecated: use TEMPORAL_TLS_CLIENT_CERT_PATH" in caplog.text
    )
    assert "TEMPORAL_TLS_CLIENT_KEY is deprecated: use TEMPORAL_TLS_CLIENT_KEY_PATH" in caplog.text
    tls = connect_config(s)["tls"]
    assert (tls.client_cert, tls.client_private_key) == (b"CERT", b"KEY")
