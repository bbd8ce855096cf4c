"""The NATS server in MQTT mode (tools/brokers.py) as a test peer: a real broker that speaks MQTT
3.1.1 only. Missing nats-server is a failure, not a skip: `make setup` installs it."""
from tools.brokers import NatsMqtt  # noqa: F401
