"""The pipeline's fixtures (a runtime on the real RabbitMQ and SQLite, with the stand-ins), shared here."""

from tests.pipeline.conftest import make_settings, platform, sender_for, stackone, start_runtime

__all__ = ["make_settings", "platform", "sender_for", "stackone", "start_runtime"]
