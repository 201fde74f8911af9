"""RabbitMQ edge: topology, codec, confirmed publisher, and the consumer (the only place that acks)."""

from lmsbridge.broker.codec import SyncTask, Task
from lmsbridge.broker.connection import Broker
from lmsbridge.broker.consumer import Consumer
from lmsbridge.broker.outcome import Action, decide
from lmsbridge.broker.topology import Names

__all__ = ["Action", "Broker", "Consumer", "Names", "SyncTask", "Task", "decide"]
