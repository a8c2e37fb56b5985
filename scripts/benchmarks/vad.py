"""Voice-activity detectors on synthetic speech with known pauses: frame accuracy and cost per second of audio.

    apt-get install espeak-ng
    python scripts/benchmark.py vad                       # the table of README "Silence"
    python scripts/benchmark.py vad --write-fixture tests/fixtures/speech_pauses   # the tests' recording

Speech: English sentences spoken by espeak-ng (several voices and rates), joined by pauses of known length
(0.25 - 1.5 s, seeded) with white noise added at each signal-to-noise ratio. Truth: a sentence is speech from its
first to its last 10 ms block within 40 dB of its loudest block (its own gaps between words count as speech, the
pauses between sentences do not); a video frame is speech when its centre sample is. Each detector's raw
per-frame flags (`speech_frames`, threshold only, no pause filtering) are scored: accuracy, speech frames found,
pause frames found. The cost is seconds of CPU time per second of audio (one thread), rounds alternating between
the detectors so that the machine's drift hits both alike; the median round is reported.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "How much wood would a woodchuck chuck?",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "The rainbow is a division of white light into many beautiful colors.",
    "Peter Piper picked a peck of pickled peppers.",
)
VOICES = (("en-us", 160), ("en-gb", 140), ("en-gb-scotland", 175))
FIXTURE_VOICE = ("en-us", 160)


def spoken(text: str, voice: str, rate: int) -> np.ndarray:
    """One sentence by espeak-ng -> (N,) float32 at 16 kHz (the project's loader resamples)."""
    from kdtalker.audio import resample

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("error: espeak-ng is not installed (apt-get install espeak-ng)")
    raw = subprocess.run([exe, "-v", voice, "-s", str(rate), "--stdout", text], capture_output=True, check=True)
    wav, sr = sf.read(io.BytesIO(raw.stdout), dtype="float32")
    return resample(wav, sr, 16000)


def speech_span(wav: np.ndarray, block: int = 160, floor_db: float = 40.0) -> tuple[int, int]:
    """(first, last + 1) sample of the 10 ms blocks within floor_db of the loudest block: the sentence, trimmed."""
    n = len(wav) // block
    rms = np.sqrt(np.mean(wav[: n * block].reshape(n, block).astype(np.float64) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -floor_db)
    return int(loud[0]) * block, (int(loud[-1]) + 1) * block


def spoken_with_pauses(
    sentences: tuple[str, ...], voice: str, rate: int, seed: int, lead: float = 0.5
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Sentences joined by seeded pauses -> clean (N,) float32 16 kHz and the speech intervals [(start, stop)] in
    samples. Each sentence is trimmed to its span; `lead` seconds of silence open and close the recording."""
    rng = np.random.default_rng(seed)
    parts, spans, at = [np.zeros(int(lead * 16000), np.float32)], [], int(lead * 16000)
    for k, text in enumerate(sentences):
        wav = spoken(text, voice, rate)
        a, b = speech_span(wav)
        parts.append(wav[a:b])
        spans.append((at, at + b - a))
        at += b - a
        pause = lead if k == len(sentences) - 1 else float(rng.uniform(0.25, 1.5))
        parts.append(np.zeros(int(pause * 16000), np.float32))
        at += int(pause * 16000)
    return np.concatenate(parts), spans


def with_noise(wav: np.ndarray, spans: list[tuple[int, int]], snr_db: float | None, seed: int) -> np.ndarray:
    """White noise at `snr_db` below the speech's RMS (None: the clean recording)."""
    if snr_db is None:
        return wav
    speech = np.concatenate([wav[a:b] for a, b in spans]).astype(np.float64)
    level = np.sqrt(np.mean(speech**2)) / 10 ** (snr_db / 20)
    noise = np.random.default_rng(seed).normal(0.0, level, len(wav))
    return np.clip(wav + noise, -1, 1).astype(np.float32)


def frame_truth(spans: list[tuple[int, int]], num_frames: int, fps: float) -> np.ndarray:
    """(T,) bool: frame i is speech when its centre sample lies in a speech interval."""
    centre = (np.arange(num_frames) + 0.5) * 16000 / fps
    truth = np.zeros(num_frames, bool)
    for a, b in spans:
        truth |= (centre >= a) & (centre < b)
    return truth


def scores(flags: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Accuracy, fraction of speech frames flagged speech, fraction of pause frames flagged silent."""
    return float((flags == truth).mean()), float(flags[truth].mean()), float((~flags[~truth]).mean())


def write_fixture(folder: Path, fps: float) -> None:
    """The tests' recording: the first three sentences, FIXTURE_VOICE, seed 0, as FLAC + its speech intervals."""
    folder.mkdir(parents=True, exist_ok=True)
    wav, spans = spoken_with_pauses(SENTENCES[:3], *FIXTURE_VOICE, seed=0)
    sf.write(folder / "speech.flac", wav, 16000, subtype="PCM_16")
    note = {
        "made_by": "python scripts/benchmark.py vad --write-fixture " + str(folder),
        "voice": FIXTURE_VOICE[0],
        "rate": FIXTURE_VOICE[1],
        "sentences": list(SENTENCES[:3]),
        "sample_rate": 16000,
        "speech_intervals": [list(s) for s in spans],
    }
    (folder / "speech.json").write_text(json.dumps(note, indent=1) + "\n")
    print(f"wrote {folder / 'speech.flac'} ({len(wav) / 16000:.2f} s) and speech.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snr", type=float, nargs="+", default=[30.0, 20.0, 10.0], help="noise levels (dB)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--aggressiveness", type=int, nargs="+", default=[0, 1, 2, 3], help="WebRTC modes")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per detector (alternating)")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--write-fixture", type=Path, default=None, help="write the tests' recording and stop")


def run(args: argparse.Namespace) -> None:
    from kdtalker.audio.vad import hop_detector, speech_frames

    if args.write_fixture is not None:
        write_fixture(args.write_fixture, args.fps)
        return
    clips = []
    for v, (voice, rate) in enumerate(VOICES):
        wav, spans = spoken_with_pauses(SENTENCES, voice, rate, seed=v)
        clips.append((wav, spans))
    seconds = sum(len(w) for w, _ in clips) / 16000
    detectors = [("silero", 0)] + [("webrtc", a) for a in args.aggressiveness]
    print(
        f"{len(clips)} voices x {len(SENTENCES)} sentences, {seconds:.1f} s of audio per noise level, {args.fps:g} fps"
    )
    print(f"{'detector':<12}{'noise':>8}{'accuracy':>10}{'speech':>8}{'pause':>8}")
    for snr in [None] + list(args.snr):
        for name, mode in detectors:
            flags, truth = [], []
            for c, (wav, spans) in enumerate(clips):
                noisy = with_noise(wav, spans, snr, seed=100 + c)
                f = speech_frames(noisy, args.fps, name, args.threshold, mode)
                flags.append(f)
                truth.append(frame_truth(spans, len(f), args.fps))
            acc, found, quiet = scores(np.concatenate(flags), np.concatenate(truth))
            label = name if name == "silero" else f"webrtc-{mode}"
            noise = "clean" if snr is None else f"{snr:g} dB"
            print(f"{label:<12}{noise:>8}{acc:>10.3f}{found:>8.3f}{quiet:>8.3f}")
    # cost: CPU seconds per audio second on the 20 dB clips, rounds alternating between the detectors
    noisy = [with_noise(w, s, 20.0, seed=100 + c) for c, (w, s) in enumerate(clips)]
    times: dict[str, list[float]] = {f"{n}-{m}" if n == "webrtc" else n: [] for n, m in detectors}
    for _ in range(args.rounds):
        for name, mode in detectors:
            start = time.process_time()
            for wav in noisy:
                speech_frames(wav, args.fps, name, args.threshold, mode)
            times[f"{name}-{mode}" if name == "webrtc" else name].append((time.process_time() - start) / seconds)
    loads = {}
    for name, mode in detectors:
        start = time.process_time()
        for _ in range(args.rounds):
            hop_detector(name, mode)
        loads[name] = (time.process_time() - start) / args.rounds
    print("loading a detector (CPU ms, once per clip): " + ", ".join(f"{k} {1000 * v:.1f}" for k, v in loads.items()))
    print(f"cost (CPU ms per second of audio, median of rounds, one thread; {len(clips)} loads included):")
    for label, values in times.items():
        rounds = ", ".join(f"{1000 * v:.2f}" for v in values)
        print(f"  {label:<12}{1000 * float(np.median(values)):8.2f}   rounds: {rounds}")
