"""The text-to-speech interface every engine implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np


class TextToSpeech(Protocol):
    name: str

    def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        """Bus-rate int16 audio for ``text``, yielded as soon as each part is ready."""
        ...
