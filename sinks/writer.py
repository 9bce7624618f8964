"""Writing one batch to ClickHouse: one insert per table of Python-built rows, one Avro
insert per landing table, then the ``calls`` rows of the calls it changes the facts of.

A ClickHouse that cannot be reached (``OperationalError``) fails the whole write, so the
sink retries it without committing. Anything else ClickHouse refuses is data: the batch
is split in halves until the records it cannot take are found; those are handed to
``reject`` (the sink dead-letters them) and the rest is written.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.exceptions import OperationalError

from sinks import metrics as sink_metrics
from sinks.batch import Batch, Landed
from sinks.landing import container, landing_table
from sinks.rows import COLUMNS
from sinks.store import Store
from switchboard import codec

T = TypeVar("T")
Reject = Callable[[ConsumerRecord, str], Awaitable[None]]
Item = tuple[ConsumerRecord, bytes]  # a landed record and what ClickHouse receives of it


LANES = 4  # tables of a batch written at once, each on its own connection


async def write(store: Store, batch: Batch, reject: Reject) -> None:
    await write_facts(store, batch, reject)
    await asyncio.to_thread(store.rebuild_calls, batch.call_ids)


async def write_facts(store: Store, batch: Batch, reject: Reject) -> None:
    """Every table but ``calls``, which is computed from these (``Store.rebuild_calls``)."""
    jobs: list[Coroutine[Any, Any, None]] = []
    lanes = itertools.cycle(store.lanes(LANES))
    for table, rows in batch.rows.items():
        jobs.append(_insert_rows(next(lanes), table, rows, batch.origins[table], reject))
    for cls, landed in batch.landed.items():
        jobs.append(_land(next(lanes), cls, landed, reject))
    # ClickHouse works with the GIL released: the tables go in side by side.
    failures = [r for r in await asyncio.gather(*jobs, return_exceptions=True) if isinstance(r, BaseException)]
    if failures:
        raise failures[0]  # after every job ended, so a retry never overlaps this attempt


async def _insert_rows(
    store: Store, table: str, rows: list[tuple[Any, ...]], origins: list[ConsumerRecord], reject: Reject
) -> None:
    kept = await _insert_or_split(
        list(zip(rows, origins, strict=True)), lambda part: store.insert(table, COLUMNS[table], [r for r, _ in part]),
        lambda item: item[1], f"insert into {table}", reject)
    sink_metrics.ROWS_INSERTED.labels(table).inc(len(kept))


async def _land(store: Store, cls: type, landed: Landed, reject: Reject) -> None:
    table = landing_table(cls)

    def insert(values: Sequence[bytes]) -> None:
        store.insert_avro(table, container(cls, values))

    try:
        await asyncio.to_thread(insert, landed.values)
        kept = len(landed.values)
    except OperationalError:
        raise
    except Exception:
        # The slow path, for a batch ClickHouse refused: pair each value with its record to find the culprits.
        items = list(zip(landed.msgs, landed.values, strict=True))
        kept = len(await _insert_or_split(await _readable(cls, items, reject),
                                          lambda part: insert([value for _, value in part]), lambda item: item[0],
                                          f"insert into {table}", reject))
    sink_metrics.ROWS_INSERTED.labels(table).inc(kept)


async def _readable(cls: type, items: list[Item], reject: Reject) -> list[Item]:
    """The values that are records of the schema the way every other consumer reads them; the rest
    is rejected."""
    readable = []
    for m, value in items:
        try:
            codec.decode(cls, m.value)
            readable.append((m, value))
        except codec.DecodeError as exc:
            await reject(m, f"DecodeError: {exc}")
    return readable


async def _insert_or_split(
    items: list[T], insert: Callable[[Sequence[T]], Any], origin: Callable[[T], ConsumerRecord], what: str,
    reject: Reject,
) -> list[T]:
    """Insert ``items``; if ClickHouse refuses them, bisect to the ones it refuses and reject those."""
    kept, refused = await _bisect(items, insert)
    if len(refused) > 1 and not kept:
        raise refused[0][1]  # every one refused on its own: the database is the problem, not the data
    for item, exc in refused:
        await reject(origin(item), f"{what}: {type(exc).__name__}: {exc}")
    return kept


async def _bisect(items: list[T], insert: Callable[[Sequence[T]], Any]) -> tuple[list[T], list[tuple[T, Exception]]]:
    if not items:
        return [], []
    try:
        await asyncio.to_thread(insert, items)
        return items, []
    except OperationalError:
        raise
    except Exception as exc:
        if len(items) == 1:
            return [], [(items[0], exc)]
    mid = len(items) // 2
    kept_a, refused_a = await _bisect(items[:mid], insert)
    kept_b, refused_b = await _bisect(items[mid:], insert)
    return kept_a + kept_b, refused_a + refused_b
