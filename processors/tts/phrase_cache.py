"""Audio of common phrases (greeting, fallbacks, goodbye), synthesised once per engine and voice, then reused.

The fallback utterance must play the instant an engine fails, so it is
synthesised ahead (``warm``); other listed phrases are cached the first time
they are spoken. Only listed phrases are cached: replies that carry callers'
details never are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterable

import numpy as np
from prometheus_client import Counter

from processors.tts.engine import TextToSpeech

logger = logging.getLogger(__name__)

CACHE_LOOKUPS = Counter("switchboard_tts_phrase_cache_total", "phrase cache lookups", ["result"])

# Every fixed sentence the offline clinic policy says (processors/agent/policy.py; a spec keeps the two in
# step), plus the cloud fallback. Sentences carrying a caller's day or time are never cached.
DEFAULT_PHRASES = (
    "Sorry, give me a moment.",
    "Thank you for calling Riverside Clinic.",
    "How can I help you today?",
    "Is there anything else I can help you with?",
    "Goodbye!",
    "Let me put you through to one of our staff.",
    "Please hold.",
    "Sorry, I didn't quite get that.",
    "I can book, reschedule or cancel an appointment, or tell you our opening hours.",
    "What would you like to do?",
    "We are open Monday to Friday from 8 AM to 6 PM, and on Saturday from 9 AM to 1 PM.",
    "Which day would suit you?",
    "Which day is the appointment you would like to cancel?",
    "Which day would suit you better?",
    "Is that right?",
    "No problem.",
    "Sorry, was that a yes or a no?",
    "You can say yes or press 1, or say no or press 2.",
    "Are you still there?",
    "I'll let you go now. Goodbye.",
)

# Openers of sentences that are not cached whole (the policy's confirmations carry a day and a time; an LLM's
# replies start like this too): with the first clause cut (first_clause.py) the opener plays from the cache at once.
CLAUSE_PHRASES = (
    "Just to confirm,",
    "Sure,",
    "Great,",
    "Okay,",
    "Alright,",
    "Of course,",
    "Certainly,",
    "Perfect,",
    "Thank you,",
    "Thanks,",
    "No problem,",
    "Got it,",
    "Sorry,",
)


# Played by the ingress when a reply is late (ingress/filler.py); the TTS processor sends it to each call at call start,
# so it is always cached (and warmed with the listed phrases).
FILLER_PHRASE = "One moment, please."


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


class PhraseCache:
    def __init__(self, phrases: Iterable[str] = DEFAULT_PHRASES) -> None:
        self.phrases = {normalise(p): p for p in (*phrases, FILLER_PHRASE)}
        self.audio: dict[tuple[str, str, str], np.ndarray] = {}

    def cacheable(self, text: str) -> bool:
        return normalise(text) in self.phrases

    def get(self, engine: str, voice: str | None, text: str) -> np.ndarray | None:
        hit = self.audio.get((engine, voice or "", normalise(text)))
        if self.cacheable(text):
            CACHE_LOOKUPS.labels("hit" if hit is not None else "miss").inc()
        return hit

    def put(self, engine: str, voice: str | None, text: str, audio: np.ndarray) -> None:
        if self.cacheable(text) and len(audio):
            self.audio[(engine, voice or "", normalise(text))] = audio

    async def speak(self, engine: TextToSpeech, voice: str | None, text: str) -> AsyncIterator[np.ndarray]:
        """``text`` in ``engine``'s ``voice``: from the cache when there, else synthesised (and kept if listed)."""
        cached = self.get(engine.name, voice, text)
        if cached is not None:
            yield cached
            return
        parts: list[np.ndarray] = []
        async for audio in engine.synthesize(text, voice):
            parts.append(audio)
            yield audio
        if parts:
            self.put(engine.name, voice, text, np.concatenate(parts))

    async def warm(self, engine: TextToSpeech, voice: str | None, phrases: Iterable[str] | None = None) -> int:
        """Synthesise the phrases not cached yet for this engine and voice; returns how many were added."""
        added = 0
        for phrase in phrases if phrases is not None else self.phrases.values():
            if self.get(engine.name, voice, phrase) is None:
                async for _ in self.speak(engine, voice, phrase):
                    pass
                added += 1
        logger.info("phrase cache warmed", extra={"fields": {"engine": engine.name, "voice": voice, "added": added}})
        return added


class CachedTts:
    """An engine whose listed phrases are served from the cache (the offline voice of a cloud-agent deployment)."""

    def __init__(self, engine: TextToSpeech, cache: PhraseCache) -> None:
        self.engine = engine
        self.cache = cache
        self.name = engine.name

    def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        return self.cache.speak(self.engine, voice, text)

    async def warm(self) -> int:
        return await self.cache.warm(self.engine, None)
