"""Building verifiers and signers from configuration, and the header handling every scheme shares.

Complements ``test_signatures.py``: which scheme a source gets, which secrets are refused at
start-up (and that the refusal never echoes them), how headers are looked up, and the
less common but legal shapes of each scheme's signature header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr
from standardwebhooks import Webhook

from lmsbridge.errors import ConfigError, RejectRequest
from lmsbridge.settings import SignatureScheme, SourceSettings
from lmsbridge.vendors import Verifier, build_signer, build_verifier
from lmsbridge.vendors.signatures.github import GitHubVerifier
from lmsbridge.vendors.signatures.standard_webhooks import StandardWebhooksVerifier, public_key_of
from lmsbridge.vendors.signatures.stripe import StripeVerifier

NOW = 1_780_000_000
BODY = b'{"id":"evt_1","type":"assignment.created","data":{}}'
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
PLAIN = "a-plain-shared-secret"
SCHEMES: tuple[SignatureScheme, ...] = ("standard-webhooks", "stripe", "github")
SECRET = {"standard-webhooks": WHSEC, "stripe": PLAIN, "github": PLAIN}


def source(scheme: SignatureScheme, secrets: list[str], **extra: object) -> SourceSettings:
    """A source's settings as configuration would give them."""
    return SourceSettings.model_validate(
        {"platform": "exec", "signature": scheme, "secrets": [SecretStr(s) for s in secrets], "accounts": ["acc"]}
        | extra
    )


def verifier(scheme: SignatureScheme, **extra: object) -> Verifier:
    """The verifier built for a source of ``scheme`` with its one test secret."""
    return build_verifier(source(scheme, [SECRET[scheme]], **extra))


def refusal(check: Verifier, headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> tuple[str, int]:
    """The (code, status) of a refused request."""
    with pytest.raises(RejectRequest) as info:
        check.verify(headers, body, now)
    return info.value.code, info.value.status


# --- choosing the scheme ---------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_build_verifier_uses_the_sources_scheme(scheme: SignatureScheme) -> None:
    """A source's verifier accepts its own scheme's signature and treats the others as unsigned (401)."""
    check = verifier(scheme)
    own = build_signer(scheme, SECRET[scheme]).sign(BODY, message_id="m1", timestamp=NOW)
    assert check.verify(own, BODY, NOW).key_index == 0
    for other in SCHEMES:
        if other != scheme:
            foreign = build_signer(other, SECRET[other]).sign(BODY, message_id="m1", timestamp=NOW)
            assert refusal(check, foreign) == ("signature_missing", 401)


def test_build_verifier_honours_tolerance_skew_and_header_names() -> None:
    """Tolerance, skew, the stripe header name and the github delivery header all come from the source."""
    stripe = verifier("stripe", signature_header="X-Acme-Signature", tolerance_seconds=10, future_skew_seconds=0)
    signed = build_signer("stripe", PLAIN, header="X-Acme-Signature").sign(BODY, message_id="m", timestamp=NOW - 10)
    assert stripe.verify(signed, BODY, NOW).timestamp == NOW - 10
    assert refusal(stripe, signed, now=NOW + 1) == ("timestamp_too_old", 401)
    ahead = build_signer("stripe", PLAIN, header="X-Acme-Signature").sign(BODY, message_id="m", timestamp=NOW + 1)
    assert refusal(stripe, ahead) == ("timestamp_in_future", 401)

    github = verifier("github", delivery_header="X-Acme-Delivery")
    signed = build_signer("github", PLAIN, delivery_header="X-Acme-Delivery").sign(BODY, message_id="d-9", timestamp=0)
    assert github.verify(signed, BODY, NOW).message_id == "d-9"


def test_build_signer_refuses_an_unknown_scheme() -> None:
    """Asking for a scheme lmsbridge does not implement is a programming error."""
    with pytest.raises(ValueError, match="unknown signature scheme"):
        build_signer("paypal", PLAIN)


# --- secrets refused at start-up -------------------------------------------------------------

BAD_SECRETS = [
    pytest.param("standard-webhooks", "whsec_not*base64!", id="whsec-not-base64"),
    pytest.param("standard-webhooks", "whsec_", id="whsec-empty"),
    pytest.param("standard-webhooks", "whpk_" + base64.b64encode(b"short-key").decode(), id="whpk-wrong-length"),
    pytest.param("standard-webhooks", "whsk_" + base64.b64encode(bytes(32)).decode(), id="private-key-in-verifier"),
    pytest.param("stripe", "", id="stripe-empty"),
    pytest.param("github", "", id="github-empty"),
]


@pytest.mark.parametrize(("scheme", "secret"), BAD_SECRETS)
def test_unusable_secrets_are_a_config_error_that_does_not_echo_them(scheme: SignatureScheme, secret: str) -> None:
    """An empty, undecodable or wrong-sized secret stops start-up with ``ConfigError``, never printing it."""
    with pytest.raises(ConfigError) as info:
        build_verifier(source(scheme, [WHSEC if scheme == "standard-webhooks" else PLAIN, secret]))
    encoded = secret.partition("_")[2]
    assert len(encoded) < 4 or encoded not in str(info.value)


def test_unpadded_whsec_secret_is_accepted_like_the_reference_library() -> None:
    """A ``whsec_`` secret whose base64 lost its padding verifies what the reference library signs with it."""
    unpadded = "whsec_" + base64.b64encode(b"a 31-byte secret for padding!!!").decode().rstrip("=")
    assert len(unpadded.removeprefix("whsec_")) % 4 != 0
    now = int(time.time())
    signature = Webhook(unpadded).sign("msg_pad", datetime.fromtimestamp(now, UTC), BODY.decode())
    headers = {"webhook-id": "msg_pad", "webhook-timestamp": str(now), "webhook-signature": signature}
    assert StandardWebhooksVerifier([unpadded]).verify(headers, BODY, now).message_id == "msg_pad"


def test_public_key_of_derives_the_verifying_key() -> None:
    """A verifier configured with ``public_key_of(whsk_...)`` accepts that private key's ``v1a`` signatures."""
    seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    private = "whsk_" + base64.b64encode(seed).decode()
    headers = build_signer("standard-webhooks", private).sign(BODY, message_id="m", timestamp=NOW)
    assert StandardWebhooksVerifier([public_key_of(private)]).verify(headers, BODY, NOW).key_index == 0
    assert refusal(StandardWebhooksVerifier([WHSEC]), headers) == ("signature_mismatch", 401)


# --- header lookup ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_aiohttp_headers_and_lower_case_dicts_both_work(scheme: SignatureScheme) -> None:
    """Verification reads aiohttp's case-insensitive headers and plain dicts with lower-case keys alike."""
    check = verifier(scheme, delivery_header="X-GitHub-Delivery")
    signed = build_signer(scheme, SECRET[scheme], delivery_header="X-GitHub-Delivery").sign(
        BODY, message_id="m-42", timestamp=NOW
    )
    proxy = CIMultiDictProxy(CIMultiDict({k.title(): v for k, v in signed.items()}))
    lower = {k.lower(): v for k, v in signed.items()}
    assert check.verify(proxy, BODY, NOW) == check.verify(lower, BODY, NOW)


# --- legal but less common header shapes -----------------------------------------------------


def test_standard_webhooks_accepts_any_matching_entry_among_several() -> None:
    """Junk, other versions and stale signatures before the matching one do not prevent acceptance."""
    good = build_signer("standard-webhooks", WHSEC).sign(BODY, message_id="m", timestamp=NOW)
    zero = "v1," + base64.b64encode(bytes(32)).decode()
    listed = f"v2,abcd {zero} nonsense v1,!!! {good['webhook-signature']}"
    assert StandardWebhooksVerifier([WHSEC]).verify({**good, "webhook-signature": listed}, BODY, NOW).message_id == "m"


def test_standard_webhooks_blank_signature_is_missing_and_bad_id_is_invalid() -> None:
    """A whitespace-only signature header counts as absent; an unprintable or over-long ``webhook-id`` is 400.

    Over-long is counted in UTF-8 bytes: the id becomes an AMQP ``message_id`` (255 bytes at most).
    """
    good = build_signer("standard-webhooks", WHSEC).sign(BODY, message_id="m", timestamp=NOW)
    check = StandardWebhooksVerifier([WHSEC])
    assert refusal(check, {**good, "webhook-signature": "   "}) == ("signature_missing", 401)
    assert refusal(check, {**good, "webhook-id": "msg\n1"}) == ("header_invalid", 400)
    assert refusal(check, {**good, "webhook-id": "msg_\udcff"}) == ("header_invalid", 400)
    assert refusal(check, {**good, "webhook-id": "\u00e9" * 128}) == ("header_invalid", 400)
    multibyte = build_signer("standard-webhooks", WHSEC).sign(BODY, message_id="\u00e9" * 127, timestamp=NOW)
    assert check.verify(multibyte, BODY, NOW).message_id == "\u00e9" * 127


def test_stripe_accepts_upper_case_hex_extra_items_and_several_v1() -> None:
    """Upper-case hex, ``v0`` items, spaces after commas and one good ``v1`` among several all verify."""
    mac = hmac.new(PLAIN.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    value = f"t={NOW}, v0=deadbeef, v1={'ab' * 32}, v1={mac.upper()}"
    verified = StripeVerifier([PLAIN]).verify({"limeplate-signature": value}, BODY, NOW)
    assert (verified.message_id, verified.timestamp) == (None, NOW)


def test_stripe_two_timestamps_are_invalid() -> None:
    """A header naming two ``t`` values is ambiguous and refused 400 ``header_invalid``."""
    mac = hmac.new(PLAIN.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    value = f"t={NOW},t={NOW + 1},v1={mac}"
    assert refusal(StripeVerifier([PLAIN]), {"Limeplate-Signature": value}) == ("header_invalid", 400)


def test_github_delivery_header_is_optional_but_must_be_usable() -> None:
    """Without the delivery header the id is ``None``; an over-long or unprintable one is 400."""
    check = GitHubVerifier([PLAIN], delivery_header="X-GitHub-Delivery")
    signed = build_signer("github", PLAIN).sign(BODY, message_id="ignored", timestamp=0)
    assert check.verify(signed, BODY, NOW).message_id is None
    assert GitHubVerifier([PLAIN]).verify({**signed, "X-GitHub-Delivery": "d-1"}, BODY, NOW).message_id is None
    assert refusal(check, {**signed, "X-GitHub-Delivery": "d" * 256}) == ("header_invalid", 400)
    assert refusal(check, {**signed, "X-GitHub-Delivery": "d-\x001"}) == ("header_invalid", 400)
