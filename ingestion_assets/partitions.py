"""The one partitions definition: a supplier per partition, keyed by a readable slug."""

from dagster import DynamicPartitionsDefinition

SUPPLIERS = "suppliers"  # its name, for the instance's dynamic-partition calls
suppliers = DynamicPartitionsDefinition(name=SUPPLIERS)
