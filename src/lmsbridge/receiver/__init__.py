"""The aiohttp receiver: webhook route, the single errors -> HTTP map, health, metrics, OpenAPI."""

from lmsbridge.receiver.app import EventPublisher, create_app, mark_shutting_down
from lmsbridge.receiver.server import ReceiverRunner

__all__ = ["EventPublisher", "ReceiverRunner", "create_app", "mark_shutting_down"]
