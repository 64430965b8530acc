"""The one way every process connects to Temporal (worker, API, CLI, tests, replayer)."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import Runtime

from worker.codec import codec_from_settings, with_codec
from worker.settings import Settings


def build_codec(settings: Settings) -> PayloadCodec | None:
    """The payload codec configured by ``JOURNEY_CODEC_KEYS``, or None when unset.

    A ring of several keys needs ``JOURNEY_CODEC_ACTIVE_KEY`` (refused otherwise), so a
    rotation never keeps encrypting with the old key by accident.
    """
    keys = settings.journey_codec_keys
    return codec_from_settings(
        keys.get_secret_value() if keys is not None else None, settings.journey_codec_active_key
    )


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The pydantic data converter; with a codec, failure messages are encrypted too."""
    if codec is None:
        return pydantic_data_converter
    return with_codec(pydantic_data_converter, codec)


# Settings fields that are Temporal's environment configuration variables (same names).
_ENVCONFIG_FIELDS = (
    "temporal_address",
    "temporal_namespace",
    "temporal_api_key",
    "temporal_tls",
    "temporal_tls_client_cert_path",
    "temporal_tls_client_key_path",
    "temporal_tls_server_ca_cert_path",
    "temporal_tls_server_name",
    "temporal_profile",
    "temporal_config_file",
)


def connect_config(settings: Settings) -> dict[str, Any]:
    """``Client.connect`` keyword arguments from Temporal's environment configuration.

    The profile (``TEMPORAL_PROFILE``, default ``default``) of the TOML file
    (``TEMPORAL_CONFIG_FILE``, default ``~/.config/temporalio/temporal.toml``, if it exists) is
    loaded by :mod:`temporalio.envconfig`, then every connection setting that was given (the
    environment, ``.env`` or the caller) overrides it, exactly as the SDK does with the
    environment. What neither sets falls back to :class:`Settings`' defaults
    (``localhost:7233``, namespace ``default``, no TLS).
    """
    env: dict[str, str] = {}
    for name in _ENVCONFIG_FIELDS:
        if name not in settings.model_fields_set:
            continue
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[name.upper()] = str(value)
    profile = ClientConfigProfile.load(profile=settings.temporal_profile, override_env_vars=env)
    config: dict[str, Any] = dict(profile.to_client_connect_config())
    config.setdefault("target_host", settings.temporal_address)
    config.setdefault("namespace", settings.temporal_namespace)
    return config


async def connect_client(
    settings: Settings,
    *,
    interceptors: list[Interceptor] | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """Connect to the Temporal frontend named by the settings (:func:`connect_config`).

    TLS, mTLS and an API key come from Temporal's environment configuration (Temporal Cloud or
    a secured cluster); the pydantic converter and the payload codec are always ours. Tracing
    interceptors are passed in by the caller that set up telemetry.
    """
    config = connect_config(settings)
    return await Client.connect(
        config.pop("target_host"),
        **config,
        data_converter=data_converter(build_codec(settings)),
        interceptors=interceptors or [],
        runtime=runtime,
    )
