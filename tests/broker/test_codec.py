"""The event encoder's own wire form of the AMQP properties is pamqp's, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pamqp import frame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from lmsbridge.broker.codec import EventEncoder
from lmsbridge.domain import AssignmentEvent
from tests.broker.test_broker import sample_event

IDS = st.text(min_size=1, max_size=60).filter(str.isprintable)  # what a message id may be (at most 240 bytes)


def event(message_id: str, correlation_id: str, received_at: datetime) -> AssignmentEvent:
    """The broker tests' sample event with these ids and this receiving time."""
    times = {"received_at": received_at, "occurred_at": received_at}
    return sample_event(message_id).model_copy(update={"correlation_id": correlation_id, **times})


@settings(max_examples=300)
@given(
    message_id=IDS,
    correlation_id=st.one_of(st.just(""), IDS),
    source=st.sampled_from(["acme", "exec", "limeplate-eu", "z" * 64]),
    seconds=st.floats(min_value=0, max_value=4_000_000_000),
    background=st.booleans(),
)
@example(message_id="m-1", correlation_id="c-1", source="acme", seconds=1_764_849_600.0, background=False)
def test_the_encoders_properties_are_the_bytes_pamqp_makes_of_them(
    message_id: str, correlation_id: str, source: str, seconds: float, background: bool
) -> None:
    """Whatever the ids, source, time and lane: the wire form is pamqp's, and it reads back to the same properties."""
    received = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    _, properties = EventEncoder(source).encode(event(message_id, correlation_id, received), background=background)

    wire = properties.marshal()
    assert wire == Basic.Properties.marshal(properties)
    _, _, header = frame.unmarshal(frame.marshal(ContentHeader(0, 10, properties), 1))
    assert isinstance(header, ContentHeader)
    read = header.properties
    assert read.message_id == message_id
    assert (read.correlation_id or "") == correlation_id
    assert read.headers == properties.headers
    assert read.timestamp == properties.timestamp
