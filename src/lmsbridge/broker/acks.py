"""Acks in groups: one ``basic.ack`` with ``multiple`` for a run of finished deliveries.

RabbitMQ pays for each ack frame much as it pays for each arrival: at 800 messages a second, a
quorum queue's CPU a message (publish, delivery and ack together) fell from 434-455 us to
305-336 us with acks grouped every 5 ms (``bench/bench_ack_groups.py``). So a settled message's
ack waits up to ``linger`` for the next flush of its channel, which acks, in one frame, the
finished deliveries at the head of the channel's outstanding ones.

``multiple`` acks every outstanding delivery up to the tag, so the one rule that keeps promise 2:
a group never reaches past a delivery that is not finished. Every delivery is registered when it
arrives (:meth:`AckGroups.arrived`) and stays registered until RabbitMQ has its ack or its nack;
one still being handled, or given up at shutdown, ends the run. The finished ones behind it are
acked one by one in the same flush, so a slow message holds up nobody's ack beyond the window.
One flush at a time per channel, so a later group's frame can never overtake an earlier one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aio_pika.abc import AbstractIncomingMessage

__all__ = ["AckGroups"]


@dataclass(eq=False, slots=True)
class _Delivery:
    message: AbstractIncomingMessage
    acked: asyncio.Future[None] | None = None  # set once the message is settled and waits for its ack


@dataclass(eq=False, slots=True)
class _Channel:
    outstanding: dict[int, _Delivery] = field(default_factory=dict)  # by delivery tag
    flushing: bool = False
    due: asyncio.TimerHandle | None = None


class AckGroups:
    """One consumer's acks, grouped per channel; ``linger`` 0 acks each message at once."""

    def __init__(self, linger: float) -> None:
        self._linger = linger
        self._channels: dict[object, _Channel] = {}  # by the delivering (aiormq) channel
        self._flushes: set[asyncio.Task[None]] = set()

    def arrived(self, message: AbstractIncomingMessage) -> None:
        """Register a delivery before it is handled: no group may reach past it until it is settled.

        Called first thing in the delivery's task, before any await: the tasks start in the order
        the deliveries came, so a delivery is registered before any later one can be settled.
        """
        channel = _channel_of(message)
        if self._linger <= 0 or message.delivery_tag is None or channel is None:
            return
        state = self._channels.get(channel)
        if state is None:
            # A channel closed and reopened delivers under a new object: the old one's state goes.
            for old in [c for c in self._channels if getattr(c, "is_closed", False)]:
                self._drop(old)
            state = self._channels[channel] = _Channel()
        state.outstanding[message.delivery_tag] = _Delivery(message)

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """Ack ``message`` at its channel's next flush (at most ``linger`` from now); raises if the ack failed."""
        tag = message.delivery_tag
        state = self._channels.get(_channel_of(message))
        delivery = state.outstanding.get(tag) if state is not None and tag is not None else None
        if state is None or delivery is None:
            await message.ack()  # not registered (linger 0, no tag, a closed channel): on its own, at once
            return
        delivery.acked = asyncio.get_running_loop().create_future()
        if state.due is None and not state.flushing:
            state.due = asyncio.get_running_loop().call_later(self._linger, self._start_flush, state)
        await delivery.acked

    def nacked(self, message: AbstractIncomingMessage) -> None:
        """Forget a delivery RabbitMQ has taken back (nacked): it no longer ends a run."""
        state = self._channels.get(_channel_of(message))
        if state is not None and message.delivery_tag is not None:
            state.outstanding.pop(message.delivery_tag, None)

    def _drop(self, channel: object) -> None:
        state = self._channels.pop(channel)
        if state.due is not None:
            state.due.cancel()
        for delivery in state.outstanding.values():
            if delivery.acked is not None and not delivery.acked.done():
                delivery.acked.set_exception(ConnectionError("the channel closed before the ack"))

    def _start_flush(self, state: _Channel) -> None:
        state.due = None
        state.flushing = True
        task = asyncio.get_running_loop().create_task(self._flush(state), name="ack-flush")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, state: _Channel) -> None:
        try:
            run: list[_Delivery] = []
            alone: list[_Delivery] = []
            head = True
            for tag in sorted(state.outstanding):
                delivery = state.outstanding[tag]
                if delivery.acked is None:
                    head = False  # still being handled (or given up): no group reaches past it
                    continue
                (run if head else alone).append(delivery)
                del state.outstanding[tag]
            if run:
                await _send(run[-1].message, run, multiple=len(run) > 1)
            for delivery in alone:
                await _send(delivery.message, [delivery], multiple=False)
        finally:
            state.flushing = False
            if any(d.acked is not None for d in state.outstanding.values()):
                state.due = asyncio.get_running_loop().call_later(self._linger, self._start_flush, state)


def _channel_of(message: AbstractIncomingMessage) -> object | None:
    """The (aiormq) channel that delivered ``message``; None once it is closed."""
    try:
        return message.channel
    except Exception:  # aio-pika raises ChannelInvalidStateError for a closed channel
        return None


async def _send(message: AbstractIncomingMessage, settled: list[_Delivery], *, multiple: bool) -> None:
    """Ack ``message`` (with ``multiple``, every one of ``settled``) and tell each waiting settle how it went."""
    try:
        await message.ack(multiple=multiple)
    except Exception as exc:
        for delivery in settled:
            if delivery.acked is not None and not delivery.acked.done():
                delivery.acked.set_exception(exc)
        return
    for delivery in settled:
        if delivery.acked is not None and not delivery.acked.done():
            delivery.acked.set_result(None)
