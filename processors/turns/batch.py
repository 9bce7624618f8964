"""Silero windows of many calls scored in one model pass.

The runner hands a worker's records to the turns logic one by one, each call in its own lane
task; the lanes woken by one fetched batch all run within the same event-loop iteration. Each
call's window that needs the model is queued here, and the queue is scored once that iteration
is over (``loop.call_soon``): no timer, no wait beyond one loop iteration, and as many calls per
pass as arrived together (``max_batch`` at most). A pass over 8–16 windows costs ~65–70 µs a
window against ~125 µs for one window alone (``bench/turn_engines.py``).

The pass runs on the event loop, as the single-window VAD did: handing it to the inference pool
cost more in thread hand-offs than the model itself (measured: the turns worker on 200 noisy
lines used 8.8 ms CPU per call-second with the pass off the loop, 5.8 ms on it, 8.1 ms unbatched).
A pass of 16 windows holds the loop ~1 ms.

Each call's recurrent state goes in and comes out with its window, so calls stay independent
(``tests/engines/test_turn_engines.py`` checks a batched call decides as it does alone).
"""

from __future__ import annotations

import asyncio

import numpy as np

from processors.turns.vad import SileroModel

_Request = tuple[np.ndarray, np.ndarray, asyncio.Future[tuple[float, np.ndarray]]]


class SileroBatcher:
    """Queues (window, state) pairs of different calls and scores them together, ``max_batch`` a pass."""

    def __init__(self, model: SileroModel, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model = model
        self.max_batch = max_batch
        self._pending: dict[int, list[_Request]] = {}  # by sample rate: one pass takes one rate
        self._scheduled = False
        self.passes = 0  # model passes made, and windows scored: their ratio is the mean batch
        self.windows = 0

    async def score(self, window: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[float, np.ndarray]:
        """The speech probability of one call's ``window`` (1, context + window) and the call's next state."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[float, np.ndarray]] = loop.create_future()
        self._pending.setdefault(sample_rate, []).append((window, state, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for rate, requests in pending.items():
            for i in range(0, len(requests), self.max_batch):
                self._pass(requests[i : i + self.max_batch], rate)

    def _pass(self, requests: list[_Request], rate: int) -> None:
        try:
            windows = np.concatenate([w for w, _, _ in requests])
            states = np.concatenate([s for _, s, _ in requests], axis=1)
            probs, new = self.model.run(windows, states, rate)
        except Exception as exc:  # every call of the pass gets the error: its record is dead-lettered
            for _, _, fut in requests:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.passes += 1
        self.windows += len(requests)
        for i, (_, _, fut) in enumerate(requests):
            if not fut.done():  # its call's task may have been cancelled meanwhile
                fut.set_result((float(probs[i]), np.ascontiguousarray(new[:, i : i + 1, :])))
