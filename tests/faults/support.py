"""Fault-test helpers: a `switchboard up` of our own, calls timing what the caller heard, the bus read back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from switchboard import codec
from switchboard.bus import consumer_options, topic_name
from switchboard.caller import CallResult, TwilioCaller, Utterance
from switchboard.credentials import ClientCredentials
from switchboard.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """Running (a zombie awaiting its parent's wait counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Up:
    """A `switchboard up` process on its own ports and run folder."""

    process: subprocess.Popen[str]
    port: int
    broker_port: int
    run_dir: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/media"

    @property
    def settings(self) -> ServiceSettings:
        return ServiceSettings(kafka_bootstrap=f"127.0.0.1:{self.broker_port}")

    @property
    def credentials(self) -> ClientCredentials:
        return ClientCredentials.load(self.run_dir, {})

    def broker_pid(self) -> int | None:
        try:
            return int((self.run_dir / f"tansu-{self.broker_port}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def descendants(self) -> list[int]:
        out, todo = [], [self.process.pid]
        while todo:
            found = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout.split()
            out += [int(p) for p in found]
            todo += found
        return out


@contextmanager
def switchboard_up(run_dir: Path, port: int, broker_port: int, timeout_s: float = 180) -> Iterator[Up]:
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_KAFKA_BOOTSTRAP"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli", "up", "--port", str(port), "--broker-port", str(broker_port),
         "--run-dir", str(run_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    up = Up(proc, port, broker_port, run_dir)
    try:
        deadline = time.monotonic() + timeout_s
        line = ""
        while "Switchboard is up" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "switchboard up exited early"
            assert time.monotonic() < deadline, "switchboard up did not become ready"
        yield up
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class TimedCall:
    """A Twilio call that notes when the caller first heard the agent after ``mark()`` (monotonic), e.g. after a
    fault was injected."""

    def __init__(self, url: str, settings: ServiceSettings, credentials: ClientCredentials) -> None:
        self.caller = TwilioCaller(url, settings, credentials=credentials)
        self.heard_at: list[float] = []  # each time agent audio arrived after a silence (poll, 50 ms)

    @property
    def result(self) -> CallResult:
        return self.caller.result

    async def run(self, utterances: list[Utterance], timeout_s: float, wait_greeting: bool = True) -> CallResult:
        async def watch() -> None:
            last = 0.0
            while True:
                media = self.caller._last_media
                if media and media != last and (not self.heard_at or media - last > 0.5):
                    self.heard_at.append(media)
                last = media or last
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            return await self.caller.run(utterances, wait_greeting=wait_greeting, timeout_s=timeout_s)
        finally:
            watcher.cancel()

    def first_heard_after(self, t: float) -> float | None:
        return next((h for h in self.heard_at if h > t), None)


async def read_all(settings: ServiceSettings, topic, cls) -> list:
    """Every record of ``topic`` as it is now."""
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    out = []
    try:
        name = topic_name(settings, topic)
        parts = consumer.partitions_for_topic(name)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(name) or set()
        tps = [TopicPartition(name, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out += [codec.decode(cls, m.value) for m in msgs]
    finally:
        await consumer.stop()
    return out
