"""The one way every process connects to Temporal (worker, API, CLI, tests, replayer)."""

from __future__ import annotations

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from worker.codec import codec_from_settings, with_codec
from worker.settings import Settings


def build_codec(settings: Settings) -> PayloadCodec | None:
    """The payload codec configured by ``JOURNEY_CODEC_KEYS``, or None when unset.

    A ring of several keys needs ``JOURNEY_CODEC_ACTIVE_KEY`` (refused otherwise), so a
    rotation never keeps encrypting with the old key by accident.
    """
    return codec_from_settings(settings.journey_codec_keys, settings.journey_codec_active_key)


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The pydantic data converter; with a codec, failure messages are encrypted too."""
    if codec is None:
        return pydantic_data_converter
    return with_codec(pydantic_data_converter, codec)


async def connect_client(
    settings: Settings,
    *,
    interceptors: list[Interceptor] | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """Connect to the Temporal frontend named by the settings.

    Uses TLS and an API key when configured (Temporal Cloud or a secured cluster), the
    pydantic converter and the payload codec. Tracing interceptors are passed in by the caller
    that set up telemetry.
    """
    tls: TLSConfig | bool = False
    if settings.temporal_tls_client_cert and settings.temporal_tls_client_key:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_client_cert.read_bytes(),
            client_private_key=settings.temporal_tls_client_key.read_bytes(),
        )
    elif settings.temporal_tls or settings.temporal_api_key:
        tls = True
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=tls,
        data_converter=data_converter(build_codec(settings)),
        interceptors=interceptors or [],
        runtime=runtime,
    )
