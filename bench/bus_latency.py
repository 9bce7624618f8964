"""Per-hop bus latency on the embedded broker, and what a short fetch wait costs in CPU.

One producer sends an AudioFrame-sized record every 20 ms (a caller's audio
rate); one consumer group member reads it. For each fetch_max_wait_ms the
script prints produce → consume p50/p95/p99 and the CPU time the consumer and
the broker spent per second. Loopback only, bounded in count and time.

    .venv/bin/python bench/bus_latency.py [--records 500] [--waits 1,5,10,50,500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tqdm import tqdm

from switchboard.broker import EmbeddedBroker
from switchboard.bus import create_topics
from switchboard.settings import ServiceSettings


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one_run(bootstrap: str, wait_ms: int, records: int, broker_pid: int) -> dict[str, float]:
    settings = ServiceSettings(kafka_bootstrap=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
    await create_topics(settings)
    topic = f"{settings.topic_prefix}audio.in"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{wait_ms}",
        fetch_max_wait_ms=wait_ms,
        auto_offset_reset="latest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        rebalance_timeout_ms=3000,
    )
    await producer.start()
    await consumer.start()
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    payload = b"\x00" * 640

    async def consume() -> None:
        while len(latencies) < records:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                now = time.perf_counter()
                for m in msgs:
                    latencies.append((now - sent[int(m.key)]) * 1000)

    reader = asyncio.create_task(consume())
    cpu0, broker0, t0 = _self_cpu_s(), _cpu_s(broker_pid), time.perf_counter()
    for i in tqdm(range(records), desc=f"fetch wait {wait_ms:>3} ms", leave=False):
        sent[i] = time.perf_counter()
        await producer.send(topic, payload, key=str(i).encode(), partition=0)
        await asyncio.sleep(0.02)
    await asyncio.wait_for(reader, 30)
    elapsed = time.perf_counter() - t0
    cpu, broker_cpu = _self_cpu_s() - cpu0, _cpu_s(broker_pid) - broker0
    await consumer.stop()
    await producer.stop()
    q = statistics.quantiles(latencies, n=100)
    return {
        "p50": statistics.median(latencies),
        "p95": q[94],
        "p99": q[98],
        "client_cpu": cpu / elapsed * 100,
        "broker_cpu": broker_cpu / elapsed * 100,
    }


async def main(args: argparse.Namespace) -> None:
    broker = EmbeddedBroker().start()
    assert broker.process is not None
    try:
        rows = []
        for wait in args.waits:
            rows.append((wait, await one_run(broker.bootstrap, wait, args.records, broker.process.pid)))
    finally:
        broker.stop()
    print(f"\nproduce → consume, one 640-byte record every 20 ms, {args.records} records, tansu on loopback")
    print(
        f"{'fetch_max_wait_ms':>17} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'client CPU %':>13} {'broker CPU %':>13}"
    )
    for wait, r in rows:
        print(
            f"{wait:>17} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f} {r['client_cpu']:>13.1f} "
            f"{r['broker_cpu']:>13.1f}"
        )
    print("(client CPU includes the producer; broker CPU is the whole tansu process)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500, help="records per setting (default 500 = 10 s)")
    parser.add_argument("--waits", default="1,5,10,50,500", help="fetch_max_wait_ms values to compare")
    a = parser.parse_args()
    a.waits = [int(w) for w in a.waits.split(",")]
    asyncio.run(main(a))
