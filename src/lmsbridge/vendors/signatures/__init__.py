"""Signature schemes, one module each, behind one interface; chosen per source.

==========================  ======  ===========================================================
code                        status  when
==========================  ======  ===========================================================
``signature_missing``       401     the scheme's signature header is absent or blank
``signature_mismatch``      401     no configured secret or key produced any given signature
``timestamp_too_old``       401     signed timestamp < now - tolerance (standard, stripe)
``timestamp_in_future``     401     signed timestamp > now + skew (standard, stripe)
``header_missing``          400     standard: ``webhook-id`` or ``webhook-timestamp`` absent
``header_invalid``          400     a timestamp, signature header or message-id header unusable
==========================  ======  ===========================================================

Each scheme's module docstring says exactly which of its headers lead to which code.
"""

from lmsbridge.settings import SourceSettings
from lmsbridge.vendors.signatures.base import Signer, Verified, Verifier
from lmsbridge.vendors.signatures.github import GitHubSigner, GitHubVerifier
from lmsbridge.vendors.signatures.standard_webhooks import StandardWebhooksSigner, StandardWebhooksVerifier
from lmsbridge.vendors.signatures.stripe import StripeSigner, StripeVerifier


def build_verifier(source: SourceSettings) -> Verifier:
    """The verifier for a source's configured scheme and secrets; bad secrets raise ``ConfigError``."""
    secrets = [s.get_secret_value() for s in source.secrets]
    if source.signature == "standard-webhooks":
        return StandardWebhooksVerifier(secrets, tolerance=source.tolerance_seconds, skew=source.future_skew_seconds)
    if source.signature == "stripe":
        return StripeVerifier(
            secrets,
            header_name=source.signature_header,
            tolerance=source.tolerance_seconds,
            skew=source.future_skew_seconds,
        )
    if source.signature == "github":
        return GitHubVerifier(secrets, delivery_header=source.delivery_header)
    raise ValueError(f"unknown signature scheme {source.signature!r}")


def build_signer(scheme: str, secret: str, *, header: str | None = None, delivery_header: str | None = None) -> Signer:
    """A signer for tests, the demo and benchmarks (``whsk_`` secrets sign ``v1a``)."""
    if scheme == "standard-webhooks":
        return StandardWebhooksSigner(secret)
    if scheme == "stripe":
        return StripeSigner(secret, header_name=header)
    if scheme == "github":
        return GitHubSigner(secret, delivery_header=delivery_header)
    raise ValueError(f"unknown signature scheme {scheme!r}")


__all__ = ["Signer", "Verified", "Verifier", "build_signer", "build_verifier"]
