"""Upload formats: the quick check before an upload is acknowledged, and the full decode after.

``probe`` runs in the request, so a body that is plainly not audio gets a 4xx and is never
acknowledged; ``decode`` runs in the worker and does the whole file (damage found only then ends
the recording FAILED with the reason). Both are ``tapevault.ingest.decode``, adapted to the
finalizer's ``Finished``, with the same cap on decoded length (``TAPEVAULT_MAX_RECORDING_SECONDS``)
on both sides of the 202.
"""

from __future__ import annotations

from pathlib import Path

from tapevault.ingest import decode as av_decode
from tapevault.ingest.finalize import Decoder, Finished

DEFAULT_MAX_SECONDS = av_decode.DEFAULT_MAX_DURATION_S


def probe(src: Path, declared: str | None, max_seconds: float = DEFAULT_MAX_SECONDS) -> str:
    """The upload's source format, or ``InvalidAudio`` saying why it is refused."""
    return av_decode.probe(src, declared, max_duration_s=max_seconds)


def decoder(max_seconds: float = DEFAULT_MAX_SECONDS) -> Decoder:
    """The finalizer's decoder, refusing audio longer than ``max_seconds`` as it decodes."""

    def decode(src: Path, dst: Path, quota: tuple[int, int] | None = None) -> Finished:
        """Write ``dst`` as canonical PCM WAV (plain PCM WAV is copied bit-exact), within the
        tenant's ``quota`` (quota, bytes stored) when it has one."""
        decoded = av_decode.decode_to_wav(src, dst, max_duration_s=max_seconds, quota=quota)
        return Finished(
            sample_rate=decoded.sample_rate,
            channels=decoded.channels,
            bits_per_sample=decoded.bits_per_sample,
            frames=decoded.frames,
            size=dst.stat().st_size,
            sha256=decoded.sha256,
            source_format=decoded.source_format,
        )

    return decode


decode = decoder()
