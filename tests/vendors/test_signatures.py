"""Signature schemes: known answers, interoperability, rotation, every refusal, and property tests.

Each scheme is a sign/verify pair checked against vectors computed outside lmsbridge (the
Standard Webhooks spec's own vector, and HMACs computed once with ``hmac``/``hashlib`` and
cross-checked with ``openssl dgst -sha256 -hmac``), against the ``standardwebhooks`` package
in both directions, and with hypothesis for forgeries and clean refusals.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from standardwebhooks import Webhook

from lmsbridge.errors import MalformedRequest, RejectRequest, SignatureRejected
from lmsbridge.settings import SourceSettings
from lmsbridge.vendors import Verifier, build_signer, build_verifier
from lmsbridge.vendors.signatures.github import GitHubSigner, GitHubVerifier
from lmsbridge.vendors.signatures.standard_webhooks import (
    StandardWebhooksSigner,
    StandardWebhooksVerifier,
    public_key_of,
)
from lmsbridge.vendors.signatures.stripe import StripeSigner, StripeVerifier

# --- the Standard Webhooks spec's own known-answer vector ---------------------------------------
KA_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KA_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
KA_TS = 1614265330
KA_BODY = b'{"test": 2432232314}'
KA_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# --- stripe and github vectors: computed once, independently, with hmac/hashlib (and openssl) ---
STRIPE_SECRET = "limeplate_stripe_secret"
STRIPE_KA_HEX = "7d6d5a60b67005c76adc7632bec9a7578d8f43354e744e9bf9e4e36ef5fc6bb7"  # HMAC(secret, "1614265330." + body)
GITHUB_SECRET = "limeplate_github_secret"
GITHUB_KA_HEX = "6c779043bfa7c848041555bb38e532aed045ab75796a967c369b3226720daac8"  # HMAC(secret, body)

OTHER_SECRET = "whsec_" + base64.b64encode(b"another-32-byte-secret-for-tests").decode()
THIRD_SECRET = "whsec_" + base64.b64encode(b"a-third-secret-of-32-bytes-long!").decode()
STRIPE_HEADER = "Limeplate-Signature"
DELIVERY = "X-GitHub-Delivery"
NOW = 1_780_000_000
SCHEMES = ("standard-webhooks", "stripe", "github")
SECRET_OF = {"standard-webhooks": KA_SECRET, "stripe": STRIPE_SECRET, "github": GITHUB_SECRET}
BODY = orjson.dumps({"id": "evt_1", "type": "assignment.created", "data": {}})


def verifier_for(
    scheme: str, *, secrets: Sequence[str] | None = None, tolerance: int = 300, skew: int = 30
) -> Verifier:
    """The verifier a source configured for ``scheme`` gets, built the way the receiver builds it."""
    source = SourceSettings(
        platform="limeplate",
        signature=scheme,
        secrets=[SecretStr(s) for s in (secrets or [SECRET_OF[scheme]])],
        accounts=["acc"],
        signature_header=STRIPE_HEADER if scheme == "stripe" else None,
        delivery_header=DELIVERY if scheme == "github" else None,
        tolerance_seconds=tolerance,
        future_skew_seconds=skew,
        api_base_url="http://127.0.0.1:9",
        api_key=SecretStr("unused-platform-key"),
    )
    return build_verifier(source)


def sign(
    scheme: str, body: bytes = BODY, *, ts: int = NOW, msg: str = "msg_1", secret: str | None = None
) -> dict[str, str]:
    """Headers for ``body`` as the platform would send them."""
    signer = build_signer(
        scheme,
        secret or SECRET_OF[scheme],
        header=STRIPE_HEADER if scheme == "stripe" else None,
        delivery_header=DELIVERY if scheme == "github" else None,
    )
    return signer.sign(body, message_id=msg, timestamp=ts)


def secret_material(secrets: Sequence[str]) -> list[str]:
    """Every form a secret could leak in: as configured, its base64 part, its decoded bytes."""
    forms: list[str] = []
    for secret in secrets:
        forms.append(secret)
        for prefix in ("whsec_", "whsk_", "whpk_"):
            if secret.startswith(prefix):
                encoded = secret.removeprefix(prefix)
                forms.append(encoded)
                raw = base64.b64decode(encoded)
                forms.extend([raw.hex(), repr(raw)])
    return forms


def assert_clean(exc: BaseException, leaks: Sequence[str]) -> None:
    """The exception's message names none of ``leaks`` (secrets, key names, signatures, MACs)."""
    rendered = [str(exc), repr(exc), *(str(a) for a in exc.args), str(getattr(exc, "message", ""))]
    for leak in leaks:
        if len(leak) >= 4:
            assert all(leak not in text for text in rendered), f"exception message leaks {leak[:3]}..."


def refuse(
    verifier: Verifier,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float = NOW,
    code: str,
    status: int,
    leaks: Sequence[str] = (),
) -> RejectRequest:
    """Verification refuses with ``code``/``status`` and a message free of secrets and signatures."""
    with pytest.raises(RejectRequest) as info:
        verifier.verify(headers, body, now)
    exc = info.value
    assert (exc.code, exc.status) == (code, status)
    assert_clean(exc, [*leaks, *secret_material(list(SECRET_OF.values())), *headers.values()])
    return exc


def ed25519_pair() -> tuple[str, str]:
    """A fresh ``whsk_`` private seed and the ``whpk_`` public key encoded independently of lmsbridge."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "whsk_" + base64.b64encode(seed).decode(), "whpk_" + base64.b64encode(public).decode()


# --- known answers -----------------------------------------------------------------------


def test_standard_webhooks_known_answer_is_signed_and_verified() -> None:
    """Our signer produces the spec's vector exactly, and our verifier accepts it at its own timestamp."""
    headers = StandardWebhooksSigner(KA_SECRET).sign(KA_BODY, message_id=KA_ID, timestamp=KA_TS)
    assert headers == {"webhook-id": KA_ID, "webhook-timestamp": str(KA_TS), "webhook-signature": KA_SIGNATURE}
    verified = StandardWebhooksVerifier([KA_SECRET]).verify(
        {"webhook-id": KA_ID, "webhook-timestamp": str(KA_TS), "webhook-signature": KA_SIGNATURE}, KA_BODY, KA_TS
    )
    assert (verified.message_id, verified.key_index, verified.timestamp) == (KA_ID, 0, KA_TS)


def test_stripe_and_github_vectors_are_plain_hmac_sha256() -> None:
    """The literal vectors are HMAC-SHA256 of the documented strings keyed by the secret as is."""
    stripe = hmac.new(STRIPE_SECRET.encode(), f"{KA_TS}.".encode() + KA_BODY, hashlib.sha256).hexdigest()
    github = hmac.new(GITHUB_SECRET.encode(), KA_BODY, hashlib.sha256).hexdigest()
    assert (stripe, github) == (STRIPE_KA_HEX, GITHUB_KA_HEX)


def test_stripe_known_answer_is_signed_and_verified() -> None:
    """The stripe signer emits ``t=<ts>,v1=<vector>``; the verifier accepts it and carries no message id."""
    headers = StripeSigner(STRIPE_SECRET, header_name=STRIPE_HEADER).sign(KA_BODY, message_id="x", timestamp=KA_TS)
    assert headers == {STRIPE_HEADER: f"t={KA_TS},v1={STRIPE_KA_HEX}"}
    verified = StripeVerifier([STRIPE_SECRET], header_name=STRIPE_HEADER).verify(
        {STRIPE_HEADER: f"t={KA_TS},v1={STRIPE_KA_HEX}"}, KA_BODY, KA_TS
    )
    assert (verified.message_id, verified.key_index, verified.timestamp) == (None, 0, KA_TS)


def test_github_known_answer_is_signed_and_verified() -> None:
    """The github signer emits ``sha256=<vector>``; the message id is the delivery header when present."""
    headers = GitHubSigner(GITHUB_SECRET, delivery_header=DELIVERY).sign(KA_BODY, message_id="d-1", timestamp=KA_TS)
    assert headers == {"X-Hub-Signature-256": f"sha256={GITHUB_KA_HEX}", DELIVERY: "d-1"}
    verifier = GitHubVerifier([GITHUB_SECRET], delivery_header=DELIVERY)
    verified = verifier.verify({"X-Hub-Signature-256": f"sha256={GITHUB_KA_HEX}", DELIVERY: "d-1"}, KA_BODY, 0)
    assert (verified.message_id, verified.key_index, verified.timestamp) == ("d-1", 0, None)
    alone = verifier.verify({"x-hub-signature-256": f"sha256={GITHUB_KA_HEX.upper()}"}, KA_BODY, 0)
    assert alone.message_id is None


@pytest.mark.parametrize("scheme", SCHEMES)
def test_header_names_are_case_insensitive(scheme: str) -> None:
    """Headers verify whatever their case, as HTTP intends (plain dicts included)."""
    headers = {k.upper(): v for k, v in sign(scheme).items()}
    verifier_for(scheme).verify(headers, BODY, NOW)


# --- interoperability with the standardwebhooks package ------------------------------------


def test_standardwebhooks_package_signature_verifies_with_ours() -> None:
    """A signature made by the ``standardwebhooks`` package is accepted by our verifier."""
    at = datetime.fromtimestamp(NOW, UTC)
    signature = Webhook(KA_SECRET).sign("msg_interop", at, BODY.decode())
    headers = {"webhook-id": "msg_interop", "webhook-timestamp": str(NOW), "webhook-signature": signature}
    verified = StandardWebhooksVerifier([KA_SECRET]).verify(headers, BODY, NOW)
    assert (verified.message_id, verified.key_index, verified.timestamp) == ("msg_interop", 0, NOW)


def test_our_signature_verifies_with_standardwebhooks_package() -> None:
    """A signature made by our signer (at the real current time) passes the package's ``verify``."""
    now = int(time.time())
    headers = StandardWebhooksSigner(KA_SECRET).sign(BODY, message_id="msg_ours", timestamp=now)
    assert Webhook(KA_SECRET).verify(BODY, headers) == orjson.loads(BODY)


def test_our_known_answer_matches_standardwebhooks_package() -> None:
    """Both implementations agree on the spec's vector."""
    at = datetime.fromtimestamp(KA_TS, UTC)
    assert Webhook(KA_SECRET).sign(KA_ID, at, KA_BODY.decode()) == KA_SIGNATURE


# --- v1a: ed25519 --------------------------------------------------------------------------


def test_ed25519_public_key_encoding_matches_public_key_of() -> None:
    """``public_key_of`` derives exactly the raw-bytes base64 ``whpk_`` key of a ``whsk_`` seed."""
    private, public = ed25519_pair()
    assert public_key_of(private) == public


def test_ed25519_sign_verify_round_trip_and_tamper() -> None:
    """A ``v1a`` signature verifies with the public key; a tampered body or id is refused."""
    private, public = ed25519_pair()
    headers = StandardWebhooksSigner(private).sign(BODY, message_id="msg_ed", timestamp=NOW)
    assert headers["webhook-signature"].startswith("v1a,")
    verifier = StandardWebhooksVerifier([public])
    assert verifier.verify(headers, BODY, NOW).message_id == "msg_ed"
    refuse(verifier, headers, BODY + b" ", code="signature_mismatch", status=401, leaks=[private, public])
    refuse(
        verifier, {**headers, "webhook-id": "msg_other"}, BODY, code="signature_mismatch", status=401, leaks=[private]
    )
    other_private, _ = ed25519_pair()
    forged = StandardWebhooksSigner(other_private).sign(BODY, message_id="msg_ed", timestamp=NOW)
    refuse(verifier, forged, BODY, code="signature_mismatch", status=401, leaks=[private, other_private])


def test_hmac_secret_and_ed25519_key_together_accept_either() -> None:
    """With a ``whsec_`` secret and a ``whpk_`` key configured, a v1 or a v1a signature accepts, by index."""
    private, public = ed25519_pair()
    verifier = StandardWebhooksVerifier([KA_SECRET, public])
    v1 = StandardWebhooksSigner(KA_SECRET).sign(BODY, message_id="m1", timestamp=NOW)
    v1a = StandardWebhooksSigner(private).sign(BODY, message_id="m1", timestamp=NOW)
    assert verifier.verify(v1, BODY, NOW).key_index == 0
    assert verifier.verify(v1a, BODY, NOW).key_index == 1
    both = {**v1, "webhook-signature": f"{v1a['webhook-signature']} {v1['webhook-signature']}"}
    assert verifier.verify(both, BODY, NOW).key_index in (0, 1)
    # A v1a signature is never checked as HMAC, nor a v1 one as ed25519.
    swapped = {**v1, "webhook-signature": "v1a," + v1["webhook-signature"].partition(",")[2]}
    refuse(verifier, swapped, BODY, code="signature_mismatch", status=401, leaks=[private, public])


# --- rotation --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_rotation_second_secret_matches_with_key_index_one(scheme: str) -> None:
    """With two secrets configured, a signature by the second verifies with ``key_index`` 1."""
    old = OTHER_SECRET if scheme == "standard-webhooks" else "old-secret-2026-q2"
    verifier = verifier_for(scheme, secrets=[old, SECRET_OF[scheme]])
    assert verifier.verify(sign(scheme), BODY, NOW).key_index == 1
    assert verifier.verify(sign(scheme, secret=old), BODY, NOW).key_index == 0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_rotation_refusals_name_no_key_and_no_secret(scheme: str) -> None:
    """Refusals under rotation never mention a key's name nor any secret."""
    names = ["rotation-key-2026-q2", "rotation-key-2026-q3"]
    old = OTHER_SECRET if scheme == "standard-webhooks" else "old-secret-2026-q2"
    source = SourceSettings(
        platform="exec",
        signature=scheme,
        secrets=[SecretStr(old), SecretStr(SECRET_OF[scheme])],
        secret_names=names,
        accounts=["acc"],
        signature_header=STRIPE_HEADER if scheme == "stripe" else None,
    )
    verifier = build_verifier(source)
    wrong = THIRD_SECRET if scheme == "standard-webhooks" else "a-third-secret"
    exc = refuse(
        verifier,
        sign(scheme, secret=wrong),
        BODY,
        code="signature_mismatch",
        status=401,
        leaks=[*names, *secret_material([old, wrong])],
    )
    assert exc.message == "no configured secret produced this signature"


# --- one test per refusal code per scheme -------------------------------------------------


Mutation = Callable[[dict[str, str]], dict[str, str]]


def _drop(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != name.lower()}


STANDARD_REFUSALS = [
    pytest.param(lambda h: _drop(h, "webhook-signature"), BODY, "signature_missing", 401, id="signature_missing"),
    pytest.param(lambda h: {**h, "webhook-signature": ""}, BODY, "signature_missing", 401, id="signature_empty"),
    pytest.param(lambda h: h, BODY + b"\n", "signature_mismatch", 401, id="mismatch_body"),
    pytest.param(
        lambda h: {**h, "webhook-signature": "v1," + base64.b64encode(bytes(32)).decode()},
        BODY,
        "signature_mismatch",
        401,
        id="mismatch_zero_mac",
    ),
    pytest.param(lambda h: {**h, "webhook-signature": "v1,@@not-base64@@"}, BODY, "signature_mismatch", 401, id="junk"),
    pytest.param(
        lambda h: {**h, "webhook-signature": "v2," + h["webhook-signature"][3:]},
        BODY,
        "signature_mismatch",
        401,
        id="unknown_version",
    ),
    pytest.param(lambda h: {**h, "webhook-timestamp": str(NOW - 301)}, BODY, "timestamp_too_old", 401, id="too_old"),
    pytest.param(lambda h: {**h, "webhook-timestamp": str(NOW + 31)}, BODY, "timestamp_in_future", 401, id="future"),
    pytest.param(lambda h: _drop(h, "webhook-id"), BODY, "header_missing", 400, id="no_id"),
    pytest.param(lambda h: {**h, "webhook-id": ""}, BODY, "header_missing", 400, id="empty_id"),
    pytest.param(lambda h: _drop(h, "webhook-timestamp"), BODY, "header_missing", 400, id="no_timestamp"),
    pytest.param(lambda h: {**h, "webhook-timestamp": "yesterday"}, BODY, "header_invalid", 400, id="ts_words"),
    pytest.param(lambda h: {**h, "webhook-timestamp": "-5"}, BODY, "header_invalid", 400, id="ts_negative"),
    pytest.param(lambda h: {**h, "webhook-timestamp": "1e9"}, BODY, "header_invalid", 400, id="ts_float"),
    pytest.param(lambda h: {**h, "webhook-timestamp": "١٢٣"}, BODY, "header_invalid", 400, id="ts_arabic_digits"),
    pytest.param(lambda h: {**h, "webhook-id": "m" * 256}, BODY, "header_invalid", 400, id="id_too_long"),
    pytest.param(
        lambda h: {**h, "webhook-signature": " ".join([h["webhook-signature"]] * 17)},
        BODY,
        "header_invalid",
        400,
        id="too_many_signatures",
    ),
]


@pytest.mark.parametrize(("mutate", "body", "code", "status"), STANDARD_REFUSALS)
def test_standard_webhooks_refusals(mutate: Mutation, body: bytes, code: str, status: int) -> None:
    """Each Standard Webhooks refusal has its stable code and status, and no secret in its message."""
    headers = mutate(sign("standard-webhooks"))
    refuse(verifier_for("standard-webhooks"), headers, body, code=code, status=status)


def _stripe(value: str) -> dict[str, str]:
    return {STRIPE_HEADER: value}


def _stripe_mac(ts: int, body: bytes = BODY, secret: str = STRIPE_SECRET) -> str:
    return hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


STRIPE_REFUSALS = [
    pytest.param({}, BODY, "signature_missing", 401, id="signature_missing"),
    pytest.param(_stripe(""), BODY, "signature_missing", 401, id="signature_empty"),
    pytest.param(_stripe(f"t={NOW},v1={_stripe_mac(NOW)}"), BODY + b" ", "signature_mismatch", 401, id="mismatch"),
    pytest.param(_stripe(f"t={NOW},v1={'0' * 64}"), BODY, "signature_mismatch", 401, id="mismatch_zero"),
    pytest.param(_stripe(f"t={NOW + 1},v1={_stripe_mac(NOW)}"), BODY, "signature_mismatch", 401, id="ts_not_signed"),
    pytest.param(_stripe(f"t={NOW - 301},v1={_stripe_mac(NOW - 301)}"), BODY, "timestamp_too_old", 401, id="too_old"),
    pytest.param(_stripe(f"t={NOW + 31},v1={_stripe_mac(NOW + 31)}"), BODY, "timestamp_in_future", 401, id="future"),
    pytest.param(_stripe(f"v1={_stripe_mac(NOW)}"), BODY, "header_invalid", 400, id="no_t"),
    pytest.param(_stripe(f"t={NOW}"), BODY, "header_invalid", 400, id="no_v1"),
    pytest.param(_stripe(f"t=soon,v1={_stripe_mac(NOW)}"), BODY, "header_invalid", 400, id="t_words"),
    pytest.param(_stripe(f"t=,v1={_stripe_mac(NOW)}"), BODY, "header_invalid", 400, id="t_empty"),
    pytest.param(_stripe("garbage"), BODY, "header_invalid", 400, id="garbage"),
    pytest.param(
        _stripe(f"t={NOW}," + ",".join(["v1=" + "0" * 64] * 17)), BODY, "header_invalid", 400, id="too_many_v1"
    ),
]


@pytest.mark.parametrize(("headers", "body", "code", "status"), STRIPE_REFUSALS)
def test_stripe_refusals(headers: dict[str, str], body: bytes, code: str, status: int) -> None:
    """Each stripe-style refusal has its stable code and status, and no secret in its message."""
    refuse(verifier_for("stripe"), headers, body, code=code, status=status, leaks=[_stripe_mac(NOW)])


def _hub(value: str) -> dict[str, str]:
    return {"X-Hub-Signature-256": value}


GITHUB_MAC = hmac.new(GITHUB_SECRET.encode(), BODY, hashlib.sha256).hexdigest()
GITHUB_REFUSALS = [
    pytest.param({}, BODY, "signature_missing", 401, id="signature_missing"),
    pytest.param(_hub(""), BODY, "signature_missing", 401, id="signature_empty"),
    pytest.param({DELIVERY: "d-1"}, BODY, "signature_missing", 401, id="delivery_only"),
    pytest.param(_hub(f"sha256={GITHUB_MAC}"), BODY + b" ", "signature_mismatch", 401, id="mismatch"),
    pytest.param(_hub("sha256=" + "0" * 64), BODY, "signature_mismatch", 401, id="mismatch_zero"),
    pytest.param(_hub(f"sha1={GITHUB_MAC[:40]}"), BODY, "header_invalid", 400, id="sha1"),
    pytest.param(_hub(f"sha256={GITHUB_MAC[:63]}"), BODY, "header_invalid", 400, id="short"),
    pytest.param(_hub(GITHUB_MAC), BODY, "header_invalid", 400, id="no_prefix"),
]


@pytest.mark.parametrize(("headers", "body", "code", "status"), GITHUB_REFUSALS)
def test_github_refusals(headers: dict[str, str], body: bytes, code: str, status: int) -> None:
    """Each github-style refusal has its stable code and status, and no secret in its message."""
    refuse(verifier_for("github"), headers, body, code=code, status=status, leaks=[GITHUB_MAC])


def test_github_has_no_timestamp_so_age_never_refuses() -> None:
    """The github scheme signs no time: the same signature verifies at any ``now``."""
    verifier = verifier_for("github")
    for now in (0, NOW, NOW * 10):
        verifier.verify(sign("github"), BODY, now)


# --- tolerance edges ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["standard-webhooks", "stripe"])
@pytest.mark.parametrize(("tolerance", "skew"), [(300, 30), (60, 0), (3600, 120)])
def test_tolerance_and_skew_edges(scheme: str, tolerance: int, skew: int) -> None:
    """``now - tolerance`` and ``now + skew`` verify; one second beyond either is refused."""
    verifier = verifier_for(scheme, tolerance=tolerance, skew=skew)
    for ts in (NOW - tolerance, NOW + skew, NOW):
        assert verifier.verify(sign(scheme, ts=ts), BODY, NOW).timestamp == ts
    refuse(verifier, sign(scheme, ts=NOW - tolerance - 1), BODY, code="timestamp_too_old", status=401)
    refuse(verifier, sign(scheme, ts=NOW + skew + 1), BODY, code="timestamp_in_future", status=401)


def test_tolerance_uses_fractional_now_conservatively() -> None:
    """With a fractional clock, a timestamp more than ``tolerance`` seconds old is refused."""
    verifier = verifier_for("standard-webhooks")
    refuse(verifier, sign("standard-webhooks", ts=NOW - 300), BODY, now=NOW + 0.5, code="timestamp_too_old", status=401)
    verifier.verify(sign("standard-webhooks", ts=NOW - 300), BODY, NOW + 0.0)


# --- property tests ---------------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# What aiohttp hands a handler for arbitrary header bytes: UTF-8 where it decodes, else surrogate escapes.
HTTP_CHARS = st.one_of(
    PRINTABLE,
    st.integers(0x80, 0xFF).map(lambda b: bytes([b]).decode("utf-8", "surrogateescape")),
    st.characters(min_codepoint=0x80, exclude_categories=["Cs"]),
)
near_now = st.integers(NOW - 400, NOW + 100).map(str)


def _b64(size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(lambda b: base64.b64encode(b).decode())


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(bytes.hex)


def request_headers(chars: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, str]]:
    """Random header dicts for all three schemes at once (each verifier reads only its own headers).

    Plausible values (timestamps near now, well-formed base64 and hex MACs, ``t=``/``v1=``/``sha256=``
    items) mixed with junk drawn from ``chars``; every header may be absent.
    """
    values = st.text(chars, max_size=80)
    timestamp = st.one_of(near_now, st.integers(0, 10**13).map(str), values)
    signature = st.one_of(
        _b64(32).map(lambda s: "v1," + s),
        _b64(64).map(lambda s: "v1a," + s),
        st.builds(lambda v, s: f"{v},{s}", st.sampled_from(["v1", "v1a", "v2", ""]), values),
        values,
    )
    stripe_item = st.one_of(
        near_now.map(lambda t: "t=" + t),
        timestamp.map(lambda t: "t=" + t),
        _hex(32).map(lambda h: "v1=" + h),
        values.map(lambda v: "v1=" + v),
        values,
    )
    hub = st.one_of(
        _hex(32).map(lambda h: "sha256=" + h),
        _hex(32).map(lambda h: "sha256=" + h.upper()),
        st.text(chars, min_size=64, max_size=64).map(lambda v: "sha256=" + v),
        values.map(lambda v: "sha256=" + v),
        values,
    )
    known = st.fixed_dictionaries(
        {},
        optional={
            "webhook-id": values,
            "webhook-timestamp": timestamp,
            "webhook-signature": st.lists(signature, max_size=4).map(" ".join),
            STRIPE_HEADER: st.lists(stripe_item, max_size=5).map(",".join),
            "X-Hub-Signature-256": hub,
            DELIVERY: values,
        },
    )
    extra = st.dictionaries(st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True), values, max_size=3)
    return st.builds(lambda k, e: {**e, **k}, known, extra)


VERIFIERS = {scheme: verifier_for(scheme) for scheme in SCHEMES}


def _never_verifies(scheme: str, headers: Mapping[str, str], body: bytes) -> None:
    with pytest.raises(RejectRequest) as info:
        VERIFIERS[scheme].verify(headers, body, NOW)
    assert isinstance(info.value, SignatureRejected | MalformedRequest)
    assert_clean(info.value, secret_material(list(SECRET_OF.values())))


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=300, deadline=None)
@given(headers=request_headers(PRINTABLE), body=st.binary(max_size=512))
def test_random_requests_never_verify_and_refuse_cleanly(scheme: str, headers: dict[str, str], body: bytes) -> None:
    """Random bodies with random printable headers never verify and only raise ``RejectRequest``s."""
    _never_verifies(scheme, headers, body)


NON_ASCII_WITNESS = {
    "webhook-id": "msg_\udce9",
    "webhook-timestamp": str(NOW),
    "webhook-signature": "v1," + base64.b64encode(bytes(32)).decode(),
    STRIPE_HEADER: f"t={NOW},v1=\u00e9",
    "X-Hub-Signature-256": "sha256=" + "\u00e9" * 64,
}


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=200, deadline=None)
@example(headers=NON_ASCII_WITNESS, body=BODY)
@given(headers=request_headers(HTTP_CHARS), body=st.binary(max_size=256))
def test_non_ascii_header_values_refuse_cleanly(scheme: str, headers: dict[str, str], body: bytes) -> None:
    """Header values as aiohttp decodes arbitrary bytes (UTF-8, else surrogate escapes) only raise refusals."""
    _never_verifies(scheme, headers, body)


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=512), other=st.binary(max_size=512), msg=st.text(PRINTABLE, min_size=1, max_size=64))
def test_signature_over_one_body_never_verifies_another(scheme: str, body: bytes, other: bytes, msg: str) -> None:
    """A valid signature over body B verifies B and never any other body B' != B."""
    assume(body != other)
    headers = sign(scheme, body, msg=msg)
    VERIFIERS[scheme].verify(headers, body, NOW)
    with pytest.raises(SignatureRejected) as info:
        VERIFIERS[scheme].verify(headers, other, NOW)
    assert info.value.code == "signature_mismatch"
