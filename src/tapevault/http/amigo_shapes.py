"""Amigo's wire shapes (amigo-recordings-api.md), shared by its dialect and the media gateway,
which serves the same metadata document behind a signed ``metadata_url``."""

from __future__ import annotations

from typing import Any

import orjson

from tapevault.core.calls import CallLinks, CallMetadata


def urls_body(links: CallLinks) -> dict[str, Any]:
    """``RecordingUrlsResponse``."""
    return {
        "call_sid": links.call_sid,
        "status": "available",
        "inbound_url": links.inbound.url if links.inbound else None,
        "outbound_url": links.outbound.url if links.outbound else None,
        "metadata_url": links.metadata_url,
    }


def metadata_body(m: CallMetadata) -> dict[str, Any]:
    """``RecordingMetadataResponse``: every required field, from the stored channels."""
    return {
        "call_sid": m.call_sid,
        "workspace_id": m.workspace_id,
        "service_id": m.service_id,
        "direction": m.direction,
        "duration_seconds": m.duration_ms / 1000,
        "inbound_format": m.inbound.format,
        "inbound_sample_rate": m.inbound.sample_rate,
        "outbound_format": m.outbound.format,
        "outbound_sample_rate": m.outbound.sample_rate,
        "tts_provider": m.tts_provider,
        "call_start_iso": m.start_iso,
        "call_end_iso": m.end_iso,
        "inbound_size_bytes": m.inbound.size_bytes,
        "outbound_size_bytes": m.outbound.size_bytes,
        "media_start_epoch_ms": m.media_start_epoch_ms,
    }


def metadata_document(m: CallMetadata) -> bytes:
    return orjson.dumps(metadata_body(m))
