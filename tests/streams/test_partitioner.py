from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.partitioner import murmur2, partition_for


@given(st.binary(max_size=64))
@settings(max_examples=500)
def test_murmur2_matches_aiokafka(key: bytes) -> None:
    assert murmur2(key) & 0x7FFFFFFF == aiokafka_murmur2(key) & 0x7FFFFFFF


@given(st.text(max_size=40), st.integers(min_value=1, max_value=64))
@settings(max_examples=500)
def test_partition_matches_aiokafka_default_partitioner(key: str, partitions: int) -> None:
    raw = key.encode()
    expected = DefaultPartitioner()(raw, list(range(partitions)), list(range(partitions)))
    assert partition_for(raw, partitions) == expected


def test_known_java_values() -> None:
    # Values printed by Kafka's Java Utils.murmur2 for these keys (documented in kafka-python's
    # test suite and reproduced by every compatible client).
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
