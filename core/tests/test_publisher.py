"""The fan-out's partitioning (pure logic): chunks keep each recipient on the partition a record keyed
by that recipient goes to, and hold no more than they should."""

from collections import Counter

import pytest
from kafka.partitioner.default import DefaultPartitioner

from core.publisher import Chunker, partition_of


class _Cluster:
    """The two questions kafka-python's partitioner asks of its metadata."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self):
        return {"t"}

    def partitions_for_topic(self, topic):
        return self.partitions

    def available_partitions_for_topic(self, topic):
        return self.partitions


@pytest.mark.parametrize("partitions", [1, 3, 12, 64])
def test_a_recipient_gets_the_partition_the_producer_gives_its_key(partitions):
    producer_partitioner = DefaultPartitioner()
    cluster = _Cluster(partitions)
    for key in ["u1", "user-42", "用户1", "a" * 128, "x:y", "0"]:
        expected = producer_partitioner.partition("t", key, key.encode(), None, None, cluster)
        assert partition_of(key, partitions) == expected


def test_known_murmur2_partitions():
    # The Java client's values (murmur2 of the key, positive, modulo the partition count).
    assert partition_of("21", 12) == (-973932308 & 0x7FFFFFFF) % 12
    assert partition_of("foobar", 12) == (-790332482 & 0x7FFFFFFF) % 12


def test_chunks_group_recipients_by_partition_up_to_their_size():
    chunker = Chunker(partitions=4, size=10)
    keys = [f"u{i}" for i in range(1000)]
    full = chunker.add(keys[:500]) + chunker.add(keys[500:])
    rest = chunker.rest()
    chunks = full + rest
    assert all(len(recipients) == 10 for _, recipients in full)
    assert all(0 < len(recipients) <= 10 for _, recipients in rest)
    assert sorted(k for _, recipients in chunks for k in recipients) == sorted(keys)  # each once
    assert all(partition_of(k, 4) == partition for partition, recipients in chunks for k in recipients)
    # Within a partition, recipients keep the order they were read in.
    for partition in range(4):
        ours = [k for p, recipients in chunks if p == partition for k in recipients]
        assert ours == [k for k in keys if partition_of(k, 4) == partition]
    assert Counter(p for p, _ in rest) == Counter(set(p for p, _ in rest))  # one partial chunk per partition
    assert chunker.rest() == []
