"""Upload formats: the quick check before an upload is acknowledged, and the full decode after.

``probe`` runs in the request, so a body that is plainly not audio gets a 4xx and is never
acknowledged: a WAV header is parsed completely (cheap), any other container is opened with PyAV
and its first audio frame decoded. ``decode`` runs in the worker and does the whole file; damage
found only then (deep in a long file) ends the recording FAILED with the reason.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import av

from tapevault.core.wav import parse_wav, write_canonical
from tapevault.errors import InvalidAudio
from tapevault.ingest import decode as av_decode
from tapevault.ingest.finalize import Finished

RIFF = b"RIFF"


def probe(path: Path, declared_type: str | None) -> str:
    """Check a spooled upload; returns its source format or raises InvalidAudio/Unsupported..."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(64)
        av_decode.check_content_type(declared_type, head)
        if size == 0:
            raise InvalidAudio("empty body: upload an audio file")
        if head.startswith(RIFF):
            try:
                f.seek(0)
                info = parse_wav(f, size)
            except InvalidAudio:
                pass  # not plain PCM (float, μ-law, ...): let FFmpeg judge it below
            else:
                return f"wav/pcm_s{info.fmt.bits_per_sample}le"
    return _probe_container(path)


def _probe_container(path: Path) -> str:
    """Open with FFmpeg and decode the first audio frame: proof the body is audio we can read."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise InvalidAudio("the upload has no audio stream")
            for frame in container.decode(stream):
                if isinstance(frame, av.AudioFrame) and frame.samples:
                    codec = stream.codec_context.name
                    return f"{container.format.name.split(',')[0]}/{codec}"
    except InvalidAudio:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise InvalidAudio(f"the upload is not audio we can decode: {exc}") from exc
    raise InvalidAudio("the upload holds no audio samples")


def decode(src: Path, dst: Path) -> Finished:
    """Write ``dst`` as canonical PCM WAV; plain PCM WAV is copied bit-exact without FFmpeg."""
    size = src.stat().st_size
    with src.open("rb") as f:
        head = f.read(4)
        if head == RIFF:
            f.seek(0)
            try:
                info = parse_wav(f, size)
            except InvalidAudio:
                info = None
            if info is not None:
                digest = hashlib.sha256()
                with dst.open("wb") as out:
                    for chunk in write_canonical(f, info):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                    total = out.tell()
                return Finished(
                    sample_rate=info.fmt.sample_rate,
                    channels=info.fmt.channels,
                    bits_per_sample=info.fmt.bits_per_sample,
                    frames=info.frames,
                    size=total,
                    sha256=digest.hexdigest(),
                    source_format=f"wav/pcm_s{info.fmt.bits_per_sample}le",
                )
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
