"""lmsbridge: signed training webhooks in, LMS assignments and completions out, via StackOne."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lmsbridge")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
