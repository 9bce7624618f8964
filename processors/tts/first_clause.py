"""A sentence's first clause first: synthesised and sent alone, the rest made while it plays.

Wraps the offline voice (``PiperEngine``, or ``CachedTts`` around it), chosen by
``SWITCHBOARD_TTS_FIRST_CLAUSE``; the pipeline only sees a ``TextToSpeech`` that yields a
sentence's audio in two parts. Where to cut is ``clauses.split_first_clause``; a listed
sentence of the phrase cache is never cut (it plays whole, at once), and a cached opener
("Just to confirm,", "Sure,") comes from the cache.

The rest is synthesised only when the first part has been handed on: the two never compete
for the inference pool (which would delay the first audio), and a hang-up or barge-in between
the two (``EndedCalls.until_ended`` in the processor) means the rest is never made.

The seam: at a comma the voice's own pause is kept (the first part ends with the ~0.2 s of
silence Piper puts after a trailing comma, the rest starts with its ~0.05 s lead-in; together
close to the pause inside the whole sentence); between two words the silences are trimmed to a
word gap. Both edges get a short fade so the cut cannot click. Both parts come from the same
fixed-gain voice (``PiperEngine(gain=...)``), so they match in level.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import numpy as np
from prometheus_client import Counter

from processors.tts.clauses import KEEP_WHOLE_WORDS, MAX_FIRST_WORDS, split_first_clause
from processors.tts.engine import TextToSpeech
from switchboard.audio import BUS_RATE

SENTENCES = Counter(
    "switchboard_tts_sentences_total",
    "sentences synthesised by the offline voice, by how the first clause was cut",
    ["cut"],  # whole | pause (at punctuation) | words (between two words) | cached_opener
)

SILENCE = 328  # |sample| under −40 dBFS counts as silence at a seam
FADE_MS = 5  # fade at each side of a seam: long enough to remove a click, too short to hear
MAX_PAUSE_TAIL_MS = 300  # a comma's pause kept at the end of the first part, at most
MAX_LEAD_IN_MS = 60  # silence kept at the start of the rest after a comma, at most
WORD_GAP_TAIL_MS = 40  # between two words: silence kept after the first part ...
WORD_GAP_LEAD_MS = 10  # ... and before the rest


def _ms(ms: int) -> int:
    return BUS_RATE * ms // 1000


def _fade(audio: np.ndarray, *, start: bool) -> np.ndarray:
    n = min(len(audio), _ms(FADE_MS))
    if n == 0:
        return audio
    out = audio.astype(np.float32)
    ramp = np.linspace(0.0, 1.0, n, endpoint=False, dtype=np.float32)
    if start:
        out[:n] *= ramp
    else:
        out[-n:] *= ramp[::-1]
    return np.round(out).astype(np.int16)


def _sound_span(audio: np.ndarray) -> tuple[int, int]:
    """First and one-past-last sample louder than ``SILENCE`` (0, 0 if none)."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > SILENCE)
    return (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, 0)


def end_of_first(audio: np.ndarray, at_pause: bool) -> np.ndarray:
    """The first part, its tail cut to the pause the seam keeps, faded out."""
    _, end = _sound_span(audio)
    keep = _ms(MAX_PAUSE_TAIL_MS if at_pause else WORD_GAP_TAIL_MS)
    return _fade(audio[: max(end + keep, _ms(FADE_MS))], start=False)


def start_of_rest(audio: np.ndarray, at_pause: bool) -> np.ndarray:
    """The rest, its lead-in cut to what the seam keeps, faded in."""
    begin, _ = _sound_span(audio)
    keep = _ms(MAX_LEAD_IN_MS if at_pause else WORD_GAP_LEAD_MS)
    return _fade(audio[max(0, begin - keep) :], start=True)


async def _all(audio: AsyncIterator[np.ndarray]) -> np.ndarray:
    parts = [a async for a in audio]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


class FirstClauseTts:
    """``engine`` with each sentence's first clause synthesised and yielded before the rest is made."""

    def __init__(
        self,
        engine: TextToSpeech,
        *,
        max_first_words: int = MAX_FIRST_WORDS,
        keep_whole_words: int = KEEP_WHOLE_WORDS,
    ) -> None:
        self.engine = engine
        self.name = engine.name
        self.max_first_words = max_first_words
        self.keep_whole_words = keep_whole_words
        self.cache = getattr(engine, "cache", None)  # CachedTts: listed phrases (and openers) play from the cache
        self.cached: Callable[[str], bool] | None = self.cache.cacheable if self.cache is not None else None

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        split = None
        if self.cached is None or not self.cached(text):
            split = split_first_clause(
                text, max_first_words=self.max_first_words, keep_whole_words=self.keep_whole_words, cached=self.cached
            )
        if split is None:
            SENTENCES.labels("whole").inc()
            async for audio in self.engine.synthesize(text, voice):
                yield audio
            return
        opener = self.cached is not None and self.cached(split.first)
        SENTENCES.labels("cached_opener" if opener else "pause" if split.at_pause else "words").inc()
        yield end_of_first(await _all(self.engine.synthesize(split.first, voice)), split.at_pause)
        # Only asked for once the first part is on its way (see the module's docstring).
        yield start_of_rest(await _all(self.engine.synthesize(split.rest, voice)), split.at_pause)
