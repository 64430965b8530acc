"""The one way every process connects to Temporal (worker, API, CLI, tests, replayer)."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from worker.settings import Settings


def build_codec(settings: Settings) -> PayloadCodec | None:
    """The payload codec configured by ``JOURNEY_CODEC_KEYS``, or None when unset."""
    if not settings.journey_codec_keys:
        return None
    from worker.codec import EncryptionCodec, parse_key_ring

    keys = parse_key_ring(settings.journey_codec_keys)
    active = settings.journey_codec_active_key or next(iter(keys))
    return EncryptionCodec(keys, active)


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The pydantic data converter, with the payload codec when one is configured."""
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)


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
