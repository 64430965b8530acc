"""Process settings, read from environment variables (and a `.env` file) by pydantic-settings.

Nothing here is read at import: call :func:`get_settings` where settings are needed, so tests
and commands can build their own :class:`Settings`.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflows.ids import DEFAULT_TASK_QUEUE

PROJECT_ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger(__name__)

# Our own names before Temporal's environment configuration; read until release 0.3.
DEPRECATED_ENV = {
    "temporal_tls_client_cert": "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "temporal_tls_client_key": "TEMPORAL_TLS_CLIENT_KEY_PATH",
}

DEV_PATIENT_LINK_SECRET = "dev-only-patient-link-secret-change-me"  # refused outside development
# Lets `make run` accept signed webhooks from a local script (integration "dev"); refused in
# production like the link secret.
DEV_INTEGRATION_SECRET = "dev-only-integration-secret-change-me"


class Settings(BaseSettings):
    """Every setting of the product's processes (worker, API, dispatcher, CLI).

    Refuses development defaults for secrets when ``JOURNEY_ENV`` is not ``development``.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    journey_env: Literal["development", "test", "production"] = "development"

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = DEFAULT_TASK_QUEUE
    # Connection: the names of Temporal's environment configuration (temporalio.envconfig), which
    # the SDK and the `temporal` CLI read too. TEMPORAL_PROFILE picks a profile of the TOML file
    # TEMPORAL_CONFIG_FILE (default ~/.config/temporalio/temporal.toml); a variable set here
    # overrides the profile (worker/client.py).
    temporal_profile: str | None = None
    temporal_config_file: Path | None = None
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool | None = None
    temporal_tls_client_cert_path: Path | None = None
    temporal_tls_client_key_path: Path | None = None
    temporal_tls_server_ca_cert_path: Path | None = None
    temporal_tls_server_name: str | None = None
    # The names before envconfig (see DEPRECATED_ENV): copied to the new ones with a warning.
    temporal_tls_client_cert: Path | None = Field(default=None, repr=False)
    temporal_tls_client_key: Path | None = Field(default=None, repr=False)
    temporal_ui_port: int = 8233

    database_url: str | None = Field(
        default=None, description="PostgreSQL DSN; unset starts the embedded server."
    )
    journey_data_dir: Path = PROJECT_ROOT / ".data"
    database_pool_min: int = 1
    database_pool_max: int = 10

    # The journey worker's sticky cache and slots (docs/performance.md "Sizing the worker"). A
    # cached journey answers a signal or update with one workflow task; a journey evicted from
    # the cache replays its whole history first. Size the cache for the journeys that wake in
    # the same hour (a burst of webhooks, a reminder morning), not for every open journey.
    worker_max_cached_workflows: int = Field(
        default=2000, ge=0, description="Journeys kept in the worker's sticky cache."
    )
    worker_max_concurrent_workflow_tasks: int | None = Field(
        default=None, ge=1, description="Workflow task slots (None: the SDK's default, 100)."
    )
    worker_max_concurrent_activities: int | None = Field(
        default=None, ge=1, description="Activity slots (None: the SDK's default, 100)."
    )
    worker_max_concurrent_local_activities: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Local activity slots: the journal writes (None: the SDK's default, 100). Keep it at"
            " or below DATABASE_POOL_MAX plus a few, or writes queue for a connection."
        ),
    )

    journey_codec_keys: SecretStr | None = Field(
        default=None, description="Payload encryption keys: 'id:base64key,id2:base64key'."
    )
    journey_codec_active_key: str | None = None
    journey_codec_cors_origins: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8233", "http://localhost:8233"],
        description=(
            "Browser origins of the Temporal UI allowed to call the codec endpoint, JSON: "
            '["https://temporal-ui.clinic.example"].'
        ),
    )

    journey_patient_link_secret: SecretStr = SecretStr(DEV_PATIENT_LINK_SECRET)
    journey_patient_link_days: int = 120
    journey_integration_secrets: dict[str, SecretStr] = Field(
        default_factory=lambda: {"dev": SecretStr(DEV_INTEGRATION_SECRET)},
        description='HMAC secrets per integration, JSON: {"booking": "...", "emr": "..."}.',
    )
    journey_webhook_tolerance_seconds: int = 300
    journey_public_url: str = "http://127.0.0.1:8000"
    journey_max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request body the API accepts (413)."
    )
    journey_codec_max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest body of the codec endpoint (batches of Temporal payloads).",
    )

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    notification_channel: Literal["file", "smtp"] = "file"
    notification_outbox_file: Path | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str = "clinic@example.invalid"
    # SMS through a Twilio-compatible REST API, with NOTIFICATION_CHANNEL=smtp (docs/messaging.md).
    sms_base_url: str = "https://api.twilio.com"
    sms_account_sid: str | None = None
    sms_auth_token: SecretStr | None = None
    sms_sender: str | None = Field(
        default=None,
        description="The sending number (+15550001111) or a messaging service (MG...).",
    )
    mail_relay_secret: SecretStr | None = Field(
        default=None,
        description="Signs the mail relay's inbound e-mail replies (Standard Webhooks; several "
        "space-separated secrets rotate). Unset: e-mail replies are refused (docs/messaging.md).",
    )

    metrics_prometheus_bind: str | None = None
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _deprecated_names(self) -> Settings:
        for old, new in DEPRECATED_ENV.items():
            value = getattr(self, old)
            if value is None:
                continue
            logger.warning(
                "%s is deprecated: use %s (the old name is read until release 0.3)",
                old.upper(),
                new,
            )
            if getattr(self, new.lower()) is None:
                setattr(self, new.lower(), value)
        return self

    @model_validator(mode="after")
    def _no_dev_secrets_outside_development(self) -> Settings:
        if self.journey_env == "production":
            if self.journey_patient_link_secret.get_secret_value() == DEV_PATIENT_LINK_SECRET:
                raise ValueError("JOURNEY_PATIENT_LINK_SECRET must be set outside development")
            secrets = self.integration_secrets()
            if DEV_INTEGRATION_SECRET in secrets.values():
                raise ValueError(
                    "JOURNEY_INTEGRATION_SECRETS must not use the development secret in production"
                )
            if not self.journey_codec_keys:
                raise ValueError("JOURNEY_CODEC_KEYS must be set outside development")
            # Staff session cookies are always Secure in production; over http:// they
            # would never come back, and the patient links would travel in clear.
            if not self.journey_public_url.startswith("https://"):
                raise ValueError("JOURNEY_PUBLIC_URL must be an https:// URL in production")
        return self

    def worker_options(self) -> dict[str, int]:
        """The ``temporalio.worker.Worker`` options these settings size (unset ones omitted)."""
        options = {
            "max_cached_workflows": self.worker_max_cached_workflows,
            "max_concurrent_workflow_tasks": self.worker_max_concurrent_workflow_tasks,
            "max_concurrent_activities": self.worker_max_concurrent_activities,
            "max_concurrent_local_activities": self.worker_max_concurrent_local_activities,
        }
        return {name: value for name, value in options.items() if value is not None}

    def integration_secrets(self) -> dict[str, str]:
        """The webhook HMAC secrets in clear, for the signature check only."""
        return {name: s.get_secret_value() for name, s in self.journey_integration_secrets.items()}

    @property
    def sms_status_callback_url(self) -> str:
        """Where the SMS provider posts delivery statuses (api/routes/messaging.py)."""
        return self.journey_public_url.rstrip("/") + "/api/messaging/sms-status"

    @property
    def outbox_file(self) -> Path:
        """Where the file channel writes the messages it would send."""
        return self.notification_outbox_file or self.journey_data_dir / "outbox.log"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once on first use."""
    return Settings()
