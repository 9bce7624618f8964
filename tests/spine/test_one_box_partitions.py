"""A stack on a broker of its own (`switchboard up` with the embedded tansu, the demo, the load-test stack) gives its
topics SWITCHBOARD_EMBEDDED_PARTITIONS (8) unless SWITCHBOARD_PARTITIONS is set, and tells every worker; a stack on a
shared or external broker keeps SWITCHBOARD_PARTITIONS (32 by default), as the manifests do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from switchboard.bus import topic_name
from switchboard.settings import DEFAULT_PARTITIONS, ServiceSettings
from switchboard.stack import Stack, scratch_stack
from switchboard.topics import CATALOG


def test_a_one_box_stack_takes_the_embedded_count_and_passes_it_to_its_workers():
    stack = Stack(ServiceSettings())
    stack.one_box()
    assert stack.settings.partitions == ServiceSettings().embedded_partitions == 8
    assert stack.extra_env["SWITCHBOARD_PARTITIONS"] == "8"
    assert DEFAULT_PARTITIONS >= 32  # the setting's own default, for clusters, is untouched


@pytest.mark.parametrize("how", ["setting", "env"])
def test_an_operator_who_sets_the_partition_count_gets_it_on_one_box_too(monkeypatch, how):
    if how == "setting":
        monkeypatch.setenv("SWITCHBOARD_PARTITIONS", "16")
        stack = Stack(ServiceSettings())
    else:
        stack = Stack(ServiceSettings(), extra_env={"SWITCHBOARD_PARTITIONS": "16"})
    stack.one_box()
    assert stack.settings.partitions == 16, "the topics are created with the operator's count"
    assert stack.extra_env.get("SWITCHBOARD_PARTITIONS") == ("16" if how == "env" else None)


def test_a_count_given_to_the_workers_is_the_one_their_topics_get_and_a_bad_one_is_refused():
    stack = Stack(ServiceSettings(partitions=32), extra_env={"SWITCHBOARD_PARTITIONS": "4"})
    assert stack.settings.partitions == 4  # what the workers will be told, whatever the settings object said
    for bad in ("0", "eight", "-3"):
        with pytest.raises(ValueError, match="SWITCHBOARD_PARTITIONS"):
            Stack(ServiceSettings(), extra_env={"SWITCHBOARD_PARTITIONS": bad})


async def _counts(stack: Stack) -> set[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic_name(stack.settings, t) for t in CATALOG])
    finally:
        await admin.close()
    return {len(d["partitions"]) for d in described}


@pytest.mark.slow
def test_a_stack_on_its_own_broker_creates_its_topics_with_the_embedded_count_and_its_workers_agree():
    with scratch_stack("boxp", ("ingress",)) as stack:
        assert asyncio.run(_counts(stack)) == {8}
        [ingress] = stack.workers
        environ = Path(f"/proc/{ingress.process.pid}/environ").read_bytes().split(b"\0")
        assert b"SWITCHBOARD_PARTITIONS=8" in environ
        # the ingress checks the topics' count against its setting at start: no disagreement was logged
        assert "partition count" not in ingress.log_path.read_text()
