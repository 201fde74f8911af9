"""The pure core: canonical events, records and sync decisions. Imports no I/O library."""

from lmsbridge.domain.events import (
    ASSIGNMENT_COMPLETED,
    ASSIGNMENT_CREATED,
    AssignmentEvent,
    EventType,
    LearningObject,
    PersonProgress,
)
from lmsbridge.domain.records import Completion, Rank, RecordKey, RecordState, merge, state_from_event
from lmsbridge.domain.sync import AccountSync, SyncPlan, SyncStep, plan_sync

__all__ = [
    "ASSIGNMENT_COMPLETED",
    "ASSIGNMENT_CREATED",
    "AccountSync",
    "AssignmentEvent",
    "Completion",
    "EventType",
    "LearningObject",
    "PersonProgress",
    "Rank",
    "RecordKey",
    "RecordState",
    "SyncPlan",
    "SyncStep",
    "merge",
    "plan_sync",
    "state_from_event",
]
