"""How fast a killed consumer-group member's partitions come back on the embedded broker (tansu).

Two members (separate processes) share a 32-partition topic; one is killed with SIGKILL and started again at once
under the same worker name. Printed per variant: kill → the new member holds partitions. Variants: the session
timeout, and how the new member joins: plainly (the broker waits out the dead member's session), as a static
member (KIP-345 ``group_instance_id``), or after dropping its predecessor by its saved member ID (LeaveGroup,
``switchboard/recovery.py``, what the processors do). The members load no model: this is the group's share of a
worker's restart. Loopback only, bounded (one round per variant, 60 s at most each).

    .venv/bin/python bench/takeover.py [--sessions 6000,3000] [--modes plain,static,leave]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from switchboard.broker import EmbeddedBroker

MEMBER = r'''
import asyncio, sys, time
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from switchboard.recovery import leave_stale_member
boot, group, mode, session, member_file = sys.argv[1:6]
session = int(session)

class Listener(ConsumerRebalanceListener):
    async def on_partitions_revoked(self, revoked):
        pass
    async def on_partitions_assigned(self, assigned):
        print(f"{time.time():.3f} ASSIGNED {len(assigned)}", flush=True)
        open(member_file, "w").write(consumer._coordinator.member_id)

async def main():
    global consumer
    static = {"group_instance_id": "worker-0"} if mode == "static" else {}
    consumer = AIOKafkaConsumer(bootstrap_servers=boot, group_id=group, session_timeout_ms=session,
                                heartbeat_interval_ms=max(100, session // 6), rebalance_timeout_ms=3000,
                                enable_auto_commit=False, fetch_max_wait_ms=10, **static)
    consumer.subscribe(["takeover"], listener=Listener())
    if mode == "leave":
        try:
            old = open(member_file).read().strip()
        except OSError:
            old = ""
        if old:
            await leave_stale_member(consumer, group, old, "bench")
    await consumer.start()
    while True:
        await consumer.getmany(timeout_ms=100)

asyncio.run(main())
'''


def spawn(boot: str, group: str, mode: str, session: int, member_file: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", MEMBER, boot, group, mode, str(session), str(member_file)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def assigned_at(log: Path, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "ASSIGNED" in line and not line.endswith(" 0"):
                return float(line.split()[0])
        time.sleep(0.05)
    return None


def trial(boot: str, mode: str, session: int, work: Path) -> float | None:
    group = f"takeover-{uuid.uuid4().hex[:8]}"
    first, other = work / f"{group}-a.log", work / f"{group}-b.log"
    a = spawn(boot, group, mode, session, work / f"{group}-a.member", first)
    b = spawn(boot, group, mode, session, work / f"{group}-b.member", other)
    try:
        if assigned_at(first, 60) is None or assigned_at(other, 60) is None:
            return None
        time.sleep(2 + session / 1000)  # settled: both hold partitions
        a.kill()
        a.wait()
        killed = time.time()
        again = work / f"{group}-a2.log"
        a = spawn(boot, group, mode, session, work / f"{group}-a.member", again)
        at = assigned_at(again, 60)
        return at - killed if at else None
    finally:
        for p in (a, b):
            p.kill()
            p.wait()


async def make_topic(boot: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=boot)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("takeover", 32, 1)])
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="6000,3000", help="session timeouts to try, ms")
    parser.add_argument("--modes", default="plain,static,leave", help="plain, static and/or leave")
    args = parser.parse_args()
    broker = EmbeddedBroker().start()
    try:
        asyncio.run(make_topic(broker.bootstrap))
        with tempfile.TemporaryDirectory() as tmp:
            for session in (int(s) for s in args.sessions.split(",")):
                for mode in args.modes.split(","):
                    took = trial(broker.bootstrap, mode, session, Path(tmp))
                    shown = f"{took:.2f} s" if took is not None else "no assignment within 60 s"
                    print(f"session {session} ms, {mode:>6}: kill -> partitions back {shown}", flush=True)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
