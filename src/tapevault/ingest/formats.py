"""Upload formats: the quick check before an upload is acknowledged, and the full decode after.

``probe`` runs in the request, so a body that is plainly not audio gets a 4xx and is never
acknowledged; ``decode`` runs in the worker and does the whole file (damage found only then ends
the recording FAILED with the reason). Both are ``tapevault.ingest.decode``, adapted to the
finalizer's ``Finished``.
"""

from __future__ import annotations

from pathlib import Path

from tapevault.ingest import decode as av_decode
from tapevault.ingest.finalize import Finished

probe = av_decode.probe


def decode(src: Path, dst: Path) -> Finished:
    """Write ``dst`` as canonical PCM WAV (plain PCM WAV is copied bit-exact)."""
    decoded = av_decode.decode_to_wav(src, dst)
    return Finished(
        sample_rate=decoded.sample_rate,
        channels=decoded.channels,
        bits_per_sample=decoded.bits_per_sample,
        frames=decoded.frames,
        size=dst.stat().st_size,
        sha256=decoded.sha256,
        source_format=decoded.source_format,
    )
