"""Computing and storing a recording's waveform peaks (see core/peaks.py).

Called by the finalizer with the WAV it has just stored, and by ``tapevault peaks backfill`` for
recordings finalized before peaks existed. Peaks are a convenience: any failure here is logged
and leaves the recording as it is (available, without peaks), never failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tapevault.core.model import Recording
from tapevault.core.peaks import compute_peaks, has_peaks, peaks_key
from tapevault.core.ports import ObjectStore, Put
from tapevault.core.wav import parse_wav

log = logging.getLogger("tapevault.peaks")


def store_peaks(store: Put, storage_key: str, wav: Path) -> bool:
    """Compute the peaks of the WAV file ``wav`` and store them next to ``storage_key``;
    False (logged) when that failed."""
    try:
        with wav.open("rb") as f:
            info = parse_wav(f, wav.stat().st_size)
            for peaks in compute_peaks(f, info):
                store.put(peaks_key(storage_key, peaks.samples_per_pixel), peaks.json_chunks())
    except Exception:
        log.warning("could not compute the waveform peaks of %s", storage_key, exc_info=True)
        return False
    return True


def backfill(store: ObjectStore, recordings: Iterable[Recording]) -> tuple[int, int]:
    """Compute the missing peaks of ``recordings`` (available ones): (computed, failed)."""
    computed = failed = 0
    for recording in recordings:
        if not recording.is_servable or has_peaks(store, recording.storage_key):
            continue
        try:
            with store.local_copy(recording.storage_key) as path:
                ok = store_peaks(store, recording.storage_key, path)
        except Exception:
            log.warning("could not read %s", recording.storage_key, exc_info=True)
            ok = False
        computed, failed = (computed + 1, failed) if ok else (computed, failed + 1)
    return computed, failed
