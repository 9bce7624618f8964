"""Never dead air on the TTS stage: a cloud voice behind a breaker, the offline voice behind it, a phrase cache.

``ResilientTts`` picks the engine per reply from its voice: ``azure:en-US-AvaNeural``
or ``piper:`` name the engine (and voice), a bare voice name goes to the
default engine, no voice to the default engine's default voice. When the cloud
voice fails mid-call (error, or no audio within the first-audio deadline), the
caller hears the fallback utterance from the phrase cache at once, then the
offline voice, which keeps the rest of the call. While the breaker is open, new
calls use the offline voice. Usage (characters actually synthesised: cache hits
are free) and fallbacks are noted in the journal for the processor to publish.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import numpy as np

from processors.resilience import FALLBACKS, EngineGuard, Fallback, Journal, Usage, describe, guarded_stream
from processors.tts.engine import TextToSpeech
from processors.tts.phrase_cache import PhraseCache

logger = logging.getLogger(__name__)


class ResilientTts:
    def __init__(
        self,
        primary: TextToSpeech,
        offline: TextToSpeech,
        guard: EngineGuard,
        cache: PhraseCache,
        journal: Journal,
        *,
        first_audio_s: float = 1.0,
        next_audio_s: float = 2.0,
        fallback_phrase: str = "Sorry, give me a moment.",
        default_voice: str | None = None,
        max_degraded_calls: int = 10_000,
    ) -> None:
        self.primary, self.offline = primary, offline
        self.name = primary.name
        self.guard = guard
        self.cache = cache
        self.journal = journal
        self.first_audio_s, self.next_audio_s = first_audio_s, next_audio_s
        self.fallback_phrase = fallback_phrase
        self.default_voice = default_voice
        self.degraded: dict[str, None] = {}  # calls that stay on the offline voice (insertion-ordered, bounded)
        self.max_degraded_calls = max_degraded_calls
        self._warm = False

    def route(self, voice: str | None) -> tuple[TextToSpeech, str | None]:
        if voice and ":" in voice:
            engine, _, name = voice.partition(":")
            if engine == self.offline.name:
                return self.offline, name or None
            return self.primary, name or self.default_voice
        return self.primary, voice or self.default_voice

    async def warm(self, cloud_phrases: bool = False) -> None:
        """Pre-synthesise the fallback utterance in the offline voice (it must play even when the cloud is down);
        optionally the common phrases in the default cloud voice too (otherwise each is cached on first use)."""
        await self.cache.warm(self.offline, None, [self.fallback_phrase])
        self._warm = True
        if cloud_phrases:
            try:
                await self.cache.warm(self.primary, self.default_voice)
            except Exception as exc:
                logger.warning("phrase cache not warmed for the cloud voice: %s", describe(exc))

    def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        return self.synthesize_call("", text, voice)

    async def synthesize_call(self, call_id: str, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        if not self._warm:
            await self.warm()
            self._warm = True
        engine, name = self.route(voice)
        if engine is self.primary and call_id in self.degraded:
            engine, name = self.offline, None
        elif engine is self.primary and not self.guard.available:
            self._switch(call_id, f"{self.guard.stage} breaker open")
            engine, name = self.offline, None
        if engine is self.offline:
            async for audio in self._speak(call_id, self.offline, None, text):
                yield audio
            return

        try:
            primary = guarded_stream(
                self.guard,
                lambda: self._speak(call_id, self.primary, name, text),
                self.first_audio_s,
                self.next_audio_s,
            )
            async for audio in primary:
                yield audio
        except Exception as exc:
            self._switch(call_id, describe(exc))
            for phrase_voice in (name, None):
                engine_for_phrase = self.primary if phrase_voice is name else self.offline
                cached = self.cache.get(engine_for_phrase.name, phrase_voice, self.fallback_phrase)
                if cached is not None:
                    yield cached
                    break
            async for audio in self._speak(call_id, self.offline, None, text):
                yield audio

    async def _speak(
        self, call_id: str, engine: TextToSpeech, voice: str | None, text: str
    ) -> AsyncIterator[np.ndarray]:
        fresh = self.cache.get(engine.name, voice, text) is None
        async for audio in self.cache.speak(engine, voice, text):
            yield audio
        if fresh:
            self.journal.add(call_id, Usage("tts", engine.name, tts_characters=len(text)))

    def _switch(self, call_id: str, reason: str) -> None:
        FALLBACKS.labels("tts", self.primary.name, self.offline.name).inc()
        logger.warning(
            "tts fallback", extra={"fields": {"from": self.primary.name, "to": self.offline.name, "reason": reason}}
        )
        if call_id:
            self.degraded[call_id] = None
            while len(self.degraded) > self.max_degraded_calls:
                self.degraded.pop(next(iter(self.degraded)))
        self.journal.add(call_id, Fallback("tts", self.primary.name, self.offline.name, reason))

    def call_ended(self, call_id: str) -> None:
        self.degraded.pop(call_id, None)
