"""The aiohttp receiver: webhook route, the single errors -> HTTP map, health, metrics, OpenAPI."""

from lmsbridge.receiver.app import EventPublisher, create_app, mark_shutting_down

__all__ = ["EventPublisher", "create_app", "mark_shutting_down"]
