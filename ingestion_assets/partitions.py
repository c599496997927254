"""The one partitions definition: a supplier per partition, keyed by a readable slug."""

from dagster import DynamicPartitionsDefinition

suppliers = DynamicPartitionsDefinition(name="suppliers")
