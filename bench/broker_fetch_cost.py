"""The embedded broker's CPU per record as a partition's log grows: why a long-running stack gets slower.

A producer writes one 960-byte record (60 ms of 8 kHz PCM, as an audio record) every few
milliseconds to one partition of a fresh tansu (memory storage), and a consumer follows it at the
tail with the stack's 10 ms fetch wait. Every few seconds the script prints the broker's CPU per
record produced against the log's length so far. With ``--no-consumer`` nothing fetches, which
separates the produce path from the fetch path. ``--retention-ms`` creates the topic with
``retention.ms`` (and ``segment.ms``) to see whether the broker trims its log.

    .venv/bin/python bench/broker_fetch_cost.py                      # produce + follow at the tail
    .venv/bin/python bench/broker_fetch_cost.py --no-consumer        # produce only
    .venv/bin/python bench/broker_fetch_cost.py --retention-ms 5000  # does retention trim the log?

Measured on this 2-core box (README, "Where the broker's CPU goes"): with a consumer the cost per record
grows linearly with the log (0.69 ms at ~800 records, 4.15 ms at ~7,400; 7 ms at ~8,500 in another run);
produce alone stays flat at ~0.35 ms; retention.ms is not honoured and DeleteRecords closes the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from switchboard.broker import EmbeddedBroker

TOPIC = "fetch-cost"
PAYLOAD = b"\0" * 960  # 60 ms of 8 kHz PCM16


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(args: argparse.Namespace) -> list[dict[str, float]]:
    broker = EmbeddedBroker().start()
    assert broker.process is not None
    rows: list[dict[str, float]] = []
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        configs = {"retention.ms": str(args.retention_ms), "segment.ms": "1000"} if args.retention_ms else {}
        await admin.create_topics([NewTopic(TOPIC, 1, 1, topic_configs=configs)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        await producer.start()
        consumer = None
        follow = None
        if not args.no_consumer:
            consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=10,
                                        group_id="fetch-cost", auto_offset_reset="latest")
            await consumer.start()

            async def tail() -> None:
                while True:
                    await consumer.getmany(timeout_ms=100)

            follow = asyncio.create_task(tail())
        produced = 0
        for phase in range(args.phases):
            before, started, n = cpu_seconds(broker.process.pid), time.monotonic(), 0
            while time.monotonic() - started < args.phase_s:
                await producer.send_and_wait(TOPIC, PAYLOAD, partition=0)
                n += 1
                await asyncio.sleep(args.interval_ms / 1000)
            used, elapsed = cpu_seconds(broker.process.pid) - before, time.monotonic() - started
            produced += n
            row = {"log_records": produced, "core_percent": 100 * used / elapsed, "ms_per_record": 1000 * used / n}
            rows.append(row)
            print(f"[{phase + 1}/{args.phases}] log {produced:6d} records: broker {row['core_percent']:5.1f} % of a "
                  f"core, {row['ms_per_record']:.2f} ms CPU per record", flush=True)
        if follow is not None and consumer is not None:
            follow.cancel()
            await consumer.stop()
        await producer.stop()
    finally:
        broker.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", type=int, default=8, help="measurement windows (default 8)")
    parser.add_argument("--phase-s", type=float, default=5.0, help="seconds per window (default 5)")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="pause between records (default 5 ms)")
    parser.add_argument("--no-consumer", action="store_true", help="produce only: nothing fetches")
    parser.add_argument("--retention-ms", type=int, default=0, help="create the topic with this retention.ms")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = asyncio.run(measure(args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    first, last = rows[0], rows[-1]
    growth = last["ms_per_record"] / first["ms_per_record"]
    print(f"CPU per record {first['ms_per_record']:.2f} ms at {first['log_records']:.0f} records → "
          f"{last['ms_per_record']:.2f} ms at {last['log_records']:.0f} ({growth:.1f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
