"""The StackOne unified LMS API: the client, the rate limiter it shares per API key, and the models it reads."""

from lmsbridge.stackone.client import Observer, ReadRetry, StackOneClient, retry_after_seconds, stackone_error
from lmsbridge.stackone.models import LmsUser
from lmsbridge.stackone.ratelimit import Budget, RateLimiter
from lmsbridge.stackone.shared_budget import SharedRateLimiter

__all__ = [
    "Budget",
    "LmsUser",
    "Observer",
    "RateLimiter",
    "ReadRetry",
    "SharedRateLimiter",
    "StackOneClient",
    "retry_after_seconds",
    "stackone_error",
]
