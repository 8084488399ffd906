"""Waveform peaks (core/peaks.py): loud and silent stretches at the right pixels, every sample
width and channel count, audiowaveform's JSON layout, and bounded memory on an hour of audio."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tapevault.core.peaks import (
    CHUNK_FRAMES,
    MIN_PIXELS,
    RESOLUTIONS,
    compute_peaks,
    default_resolution,
    peaks_key,
    peaks_keys,
)
from tapevault.core.wav import PcmFormat, canonical_header, parse_wav
from tests.support import LOUD, SECONDS, loud_pixels, speech_like, wav_bytes
from tests.support import PEAKS_RATE as RATE


def peaks_of(wav: bytes) -> dict[int, tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]]:
    f = io.BytesIO(wav)
    info = parse_wav(f, len(wav))
    return {p.samples_per_pixel: (p.mins, p.maxs) for p in compute_peaks(f, info)}


@pytest.mark.parametrize("spp", RESOLUTIONS[:2])
def test_loud_and_silent_stretches_are_at_their_times(spp: int) -> None:
    """Pixel i covers samples [i*spp, (i+1)*spp): the loud pixels are exactly the stretches of
    tone (to one pixel), and the silent ones read 0/0."""
    mins, maxs = peaks_of(wav_bytes(speech_like()))[spp]
    assert len(mins) == len(maxs) == -(-int(SECONDS * RATE) // spp)
    pixel = spp / RATE
    found = loud_pixels(maxs, spp)
    assert len(found) == len(LOUD)
    for (start, end), (got_start, got_end) in zip(LOUD, found, strict=True):
        assert abs(got_start - start) <= pixel and abs(got_end - end) <= pixel
    # 80 % of full scale in 8 bits is about 101; the tone's troughs are symmetric.
    assert 95 <= int(maxs.max()) <= 102 and -103 <= int(mins.min()) <= -95
    silent = int(5.0 * RATE // spp)  # a pixel in the middle of the 4 s - 7 s silence
    assert mins[silent] == 0 and maxs[silent] == 0


def test_coarsest_resolution_marks_the_stretches() -> None:
    """At 16384 samples per pixel (~1 s) the loud pixels are those overlapping the tone."""
    _, maxs = peaks_of(wav_bytes(speech_like()))[16384]
    pixel = 16384 / RATE
    expected = [
        i
        for i in range(len(maxs))
        if any(i * pixel < end and (i + 1) * pixel > start for start, end in LOUD)
    ]
    assert list(np.flatnonzero(maxs > 32)) == expected


@pytest.mark.parametrize("bits", [8, 16, 24])
def test_every_sample_width_gives_the_same_peaks(bits: int) -> None:
    """8-bit (unsigned), 16- and 24-bit PCM of one signal give the same 8-bit peaks."""
    reference = peaks_of(wav_bytes(speech_like()))[256]
    mins, maxs = peaks_of(wav_bytes(speech_like(), bits=bits))[256]
    assert np.array_equal(mins, reference[0]) and np.array_equal(maxs, reference[1])


def test_channels_fold_into_the_envelope_of_all() -> None:
    """A stereo call with speech on one channel and silence on the other shows the speech (not
    averaged to half), and speech on the other channel too."""
    left = speech_like()
    right = np.zeros_like(left)
    right[int(5 * RATE) : int(6 * RATE)] = 16000  # a flat block in the left's silence
    stereo = np.column_stack((left, right)).reshape(-1)
    mins, maxs = peaks_of(wav_bytes(stereo, channels=2))[256]
    mono_mins, mono_maxs = peaks_of(wav_bytes(left))[256]
    assert maxs.max() == mono_maxs.max() and mins.min() == mono_mins.min()
    middle = int(5.5 * RATE // 256)
    assert maxs[middle] == 16000 >> 8 and mono_maxs[middle] == 0


def test_blocks_straddling_chunks_are_whole() -> None:
    """A recording longer than one read chunk and not a multiple of any resolution: every
    pixel but the last covers exactly samples_per_pixel samples (the carry across chunks)."""
    frames = CHUNK_FRAMES * 2 + 1000
    samples = np.zeros(frames, dtype=np.int16)
    samples[CHUNK_FRAMES - 1] = 30000  # the last sample of the first chunk
    samples[-1] = -30000  # the last sample of all: alone in a partial pixel
    for spp, (mins, maxs) in peaks_of(wav_bytes(samples)).items():
        assert len(maxs) == -(-frames // spp)
        assert list(np.flatnonzero(maxs)) == [(CHUNK_FRAMES - 1) // spp]
        assert list(np.flatnonzero(mins)) == [len(mins) - 1]


def test_json_is_audiowaveform_version_2() -> None:
    """The document has audiowaveform's fields, and data is min/max pairs, length of them."""
    wav = wav_bytes(speech_like())
    f = io.BytesIO(wav)
    for peaks in compute_peaks(f, parse_wav(f, len(wav))):
        doc = json.loads(b"".join(peaks.json_chunks()))
        assert set(doc) == {
            "version",
            "channels",
            "sample_rate",
            "samples_per_pixel",
            "bits",
            "length",
            "data",
        }
        assert (doc["version"], doc["channels"], doc["bits"]) == (2, 1, 8)
        assert doc["sample_rate"] == RATE and doc["samples_per_pixel"] == peaks.samples_per_pixel
        assert len(doc["data"]) == 2 * doc["length"] == 2 * peaks.length
        assert doc["data"][0::2] == peaks.mins.tolist()
        assert doc["data"][1::2] == peaks.maxs.tolist()
        assert all(lo <= hi for lo, hi in zip(doc["data"][0::2], doc["data"][1::2], strict=True))


def test_default_resolution_keeps_enough_pixels() -> None:
    """The default is the coarsest resolution giving a player at least MIN_PIXELS pixels."""
    hour = 3600 * RATE
    assert default_resolution(hour) == 16384  # 3516 pixels
    assert default_resolution(60 * RATE) == 256  # 3750 pixels; 2048 gives 469
    assert default_resolution(10 * RATE) == 256  # too short for any: the finest
    assert default_resolution(MIN_PIXELS * 2048) == 2048


def test_keys_sit_next_to_the_audio() -> None:
    """Peaks keys derive from the audio's key, one a resolution, none equal to it."""
    key = "t1/s1/01JREC.wav"
    assert peaks_key(key, 256) == "t1/s1/01JREC.peaks-256.json"
    assert len(set(peaks_keys(key))) == len(RESOLUTIONS) and key not in peaks_keys(key)


def test_an_hour_is_computed_in_bounded_memory(tmp_path: Path) -> None:
    """An hour of 16 kHz audio (115 MB) yields its peaks and their JSON while never holding
    more than 32 MiB: the audio is read in chunks, never whole."""
    path = tmp_path / "hour.wav"
    frames = 3600 * RATE
    rng = np.random.default_rng(7)
    block = rng.integers(-20000, 20000, CHUNK_FRAMES, dtype=np.int16).tobytes()
    with path.open("wb") as out:
        out.write(canonical_header(PcmFormat(RATE, 1, 16), frames * 2))
        for _ in range(frames // CHUNK_FRAMES):
            out.write(block)
        out.write(block[: (frames % CHUNK_FRAMES) * 2])
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            all_peaks = compute_peaks(f, parse_wav(f, path.stat().st_size))
            sizes = {p.samples_per_pixel: sum(map(len, p.json_chunks())) for p in all_peaks}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak traced memory {peak} bytes"
    assert [p.length for p in all_peaks] == [-(-frames // spp) for spp in RESOLUTIONS]
    assert sizes[16384] < 64 * 1024  # what a player fetches first for an hour
