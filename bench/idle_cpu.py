"""CPU of the whole stack while idle: what `switchboard up` costs with no call at all.

Starts the stack as `switchboard up` does (embedded tansu on a free loopback port, the ingress on
a free port, every processor and the sink as its own process), waits until every service is
ready, lets it settle (``--settle``: the fetch waits back off after ``SWITCHBOARD_FETCH_IDLE_AFTER_MS``,
10 s by default), then reads the CPU time of every process from /proc over ``--seconds`` and
prints each service's share of one core, the total and the broker separately.

    .venv/bin/python bench/idle_cpu.py [--seconds 30] [--settle 15]
    SWITCHBOARD_FETCH_IDLE_WAIT_MS=10 .venv/bin/python bench/idle_cpu.py   # fixed 10 ms waits: as before
    .venv/bin/python bench/idle_cpu.py --latency   # what a long wait costs the first record after idle

``--latency`` measures the other side of the trade: on tansu, a consumer whose wait is at the
cap (as after a quiet spell) reads records that arrive at random 0.3–1.5 s intervals; it prints
produce → consume p50 and max per wait.

Bounded: one stack, loopback only, stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from switchboard.broker import EmbeddedBroker, free_port, listen_port
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its threads (children that exited are not counted)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (a service may fork helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


async def sparse_latency(bootstrap: str, wait_ms: int, records: int = 14) -> list[float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from switchboard.bus import consumer_options, create_topics, topic_name
    from switchboard.topics import CALLS

    settings = ServiceSettings(kafka_bootstrap=bootstrap, topic_prefix=f"w{wait_ms}.", fetch_max_wait_ms=wait_ms)
    await create_topics(settings)
    name = topic_name(settings, CALLS)
    consumer = AIOKafkaConsumer(name, group_id=f"latency-{wait_ms}", **consumer_options(settings))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    latencies: list[float] = []

    async def consume() -> None:
        while True:
            for msgs in (await consumer.getmany(timeout_ms=2000)).values():
                latencies.extend(time.time() * 1000 - m.timestamp for m in msgs)

    task = asyncio.create_task(consume())
    try:
        await asyncio.sleep(4)  # joined, fetching
        rng = random.Random(1)
        for _ in range(records):
            await producer.send_and_wait(name, b"x", key=b"k")
            await asyncio.sleep(rng.uniform(0.3, 1.5))
        await asyncio.sleep(2)
    finally:
        task.cancel()
        await consumer.stop()
        await producer.stop()
    return sorted(latencies)


def latency_main() -> int:
    broker = EmbeddedBroker(log_path=Path(tempfile.mkdtemp(prefix="switchboard-latency-")) / "tansu.log").start()
    try:
        print(f"{'fetch wait':>10} {'p50':>8} {'max':>8}  (first record after idle, tansu)")
        for wait_ms in (10, 250, 500, 1000, 2000):
            lat = asyncio.run(sparse_latency(broker.bootstrap, wait_ms))
            print(f"{wait_ms:>7} ms {statistics.median(lat):>5.0f} ms {lat[-1]:>5.0f} ms")
    finally:
        broker.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring window")
    parser.add_argument("--settle", type=float, default=15.0, help="idle time before measuring")
    parser.add_argument("--latency", action="store_true", help="measure first-record latency per fetch wait instead")
    args = parser.parse_args()
    if args.latency:
        return latency_main()

    run_dir = Path(tempfile.mkdtemp(prefix="switchboard-idle-"))
    settings = ServiceSettings(topic_prefix=f"idle{uuid.uuid4().hex[:6]}.")
    own_db = {"SWITCHBOARD_CLICKHOUSE_DSN": f"chdb://{run_dir / 'clickhouse'}"}  # not the checkout's
    stack = Stack(settings, ingress_port=listen_port(), broker_port=free_port(), run_dir=run_dir, extra_env=own_db)
    stack._next_metrics_port = listen_port()
    try:
        stack.start(embedded=True)
        stack.wait_ready()
        time.sleep(args.settle)
        groups = {f"{w.service.name}-{w.index}": descendants(w.process.pid) for w in stack.workers}
        assert stack.broker is not None and stack.broker.process is not None
        groups["broker (tansu)"] = descendants(stack.broker.process.pid)
        before = {name: sum(cpu_s(p) for p in pids) for name, pids in groups.items()}
        start = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - start
        after = {name: sum(cpu_s(p) for p in pids) for name, pids in groups.items()}
    finally:
        stack.stop()

    share = {name: 100 * (after[name] - before[name]) / elapsed for name in groups}
    wait = ServiceSettings()
    adaptive = (  # getattr: the script also measures checkouts from before adaptive waits
        f" growing to {wait.fetch_idle_wait_ms} ms after {wait.fetch_idle_after_ms} ms idle"
        if hasattr(wait, "fetch_idle_wait_ms")
        else " (fixed)"
    )
    partitions = getattr(wait, "partitions", "?")
    print(
        f"idle stack, {elapsed:.0f} s after {args.settle:.0f} s settling; {partitions} partitions; "
        f"fetch wait {wait.fetch_max_wait_ms} ms{adaptive}"
    )
    print(f"{'process':<18} {'% of one core':>14}")
    for name, pct in sorted(share.items(), key=lambda kv: -kv[1]):
        print(f"{name:<18} {pct:>13.1f}%")
    services = sum(pct for name, pct in share.items() if not name.startswith("broker"))
    broker = share["broker (tansu)"]
    print(f"{'services':<18} {services:>13.1f}%")
    print(f"{'broker':<18} {broker:>13.1f}%")
    print(f"{'total':<18} {services + broker:>13.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
