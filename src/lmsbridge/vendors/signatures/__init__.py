"""Signature schemes, one module each, behind one interface; chosen per source."""

from lmsbridge.settings import SourceSettings
from lmsbridge.vendors.signatures.base import Signer, Verified, Verifier
from lmsbridge.vendors.signatures.github import GitHubSigner, GitHubVerifier
from lmsbridge.vendors.signatures.standard_webhooks import StandardWebhooksSigner, StandardWebhooksVerifier
from lmsbridge.vendors.signatures.stripe import StripeSigner, StripeVerifier


def build_verifier(source: SourceSettings) -> Verifier:
    """The verifier for a source's configured scheme and secrets."""
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
    return GitHubVerifier(secrets, delivery_header=source.delivery_header)


def build_signer(scheme: str, secret: str, *, header: str | None = None, delivery_header: str | None = None) -> Signer:
    """A signer for tests, the demo and benchmarks."""
    if scheme == "standard-webhooks":
        return StandardWebhooksSigner(secret)
    if scheme == "stripe":
        return StripeSigner(secret, header_name=header)
    if scheme == "github":
        return GitHubSigner(secret, delivery_header=delivery_header)
    raise ValueError(f"unknown signature scheme {scheme!r}")


__all__ = ["Signer", "Verified", "Verifier", "build_signer", "build_verifier"]
