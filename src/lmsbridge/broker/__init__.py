"""RabbitMQ edge: topology, codec, confirmed publisher, the consumer and the settling of outcomes."""

from lmsbridge.broker.codec import Job, SyncTask
from lmsbridge.broker.connection import Broker, BrokerSyncQueue
from lmsbridge.broker.consumer import Consumer
from lmsbridge.broker.outcome import Action, decide
from lmsbridge.broker.topology import Names

__all__ = ["Action", "Broker", "BrokerSyncQueue", "Consumer", "Job", "Names", "SyncTask", "decide"]
