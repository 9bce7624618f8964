"""Cut a streamed reply into sentences as the tokens arrive, so TTS can start on the first one."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (optionally closed by quotes/brackets) followed by whitespace,
# or at a line break. Abbreviations and initials do not end a sentence.
_END = re.compile(r"""[.!?…]+["')\]]*\s+|\n+""")
_ABBREVIATIONS = frozenset(
    ["dr", "mr", "mrs", "ms", "st", "jr", "sr", "prof", "vs", "etc", "e.g", "i.e", "a.m", "p.m", "approx", "no"]
)


class SentenceSplitter:
    def __init__(self, min_chars: int = 2) -> None:
        self.buffer = ""
        self.min_chars = min_chars

    def feed(self, text: str) -> list[str]:
        """Add streamed text; returns the sentences completed by it."""
        self.buffer += text
        out: list[str] = []
        start = 0
        for m in _END.finditer(self.buffer):
            candidate = self.buffer[start : m.end()].strip()
            if m.group().strip() and self._is_abbreviation(self.buffer[start : m.start() + 1]):
                continue
            if len(candidate) >= self.min_chars:
                out.append(candidate)
                start = m.end()
        self.buffer = self.buffer[start:]
        return out

    def flush(self) -> list[str]:
        """The rest of the reply once the stream has ended."""
        rest, self.buffer = self.buffer.strip(), ""
        return [rest] if rest else []

    @staticmethod
    def _is_abbreviation(text: str) -> bool:
        words = text.rstrip(".").split()
        if not words or not text.endswith("."):
            return False
        last = words[-1].lower()
        return last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())
