"""The StackOne unified LMS API: the client, the rate limiter it shares per API key, and the models it reads."""

from lmsbridge.stackone.client import Observer, StackOneClient, retry_after_seconds, stackone_error
from lmsbridge.stackone.models import LmsUser
from lmsbridge.stackone.ratelimit import RateLimiter

__all__ = ["LmsUser", "Observer", "RateLimiter", "StackOneClient", "retry_after_seconds", "stackone_error"]
