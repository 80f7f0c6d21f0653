"""A topic's settings as the brokers hold them, read and changed through the admin API."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient

# confluent_kafka.admin's own name for it, which it does not re-export for mypy.
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource


def topic_configs(bootstrap_servers: str, topic: str, *, own: bool = False) -> dict[str, str | None]:
    """Every config of the topic by name, as in effect (its own, else the broker's or Kafka's);
    with `own`, only those set on the topic itself."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(30)
    return {
        name: entry.value
        for name, entry in entries.items()
        if not own or ConfigSource(entry.source) is ConfigSource.DYNAMIC_TOPIC_CONFIG
    }


def set_topic_config(bootstrap_servers: str, topic: str, name: str, value: str) -> None:
    """Sets one config of the topic, leaving the others as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    entry = ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result(30)
