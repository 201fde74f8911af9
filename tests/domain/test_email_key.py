"""The person key: one e-mail written several ways is one key, two mailboxes stay two."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsbridge.domain.events import _DOTS, _INVISIBLE, _folded, email_key, rekeyed, spellings

SAME = [
    ("Jane.Smith@ACME.example", "jane.smith@acme.example"),
    (" jane.smith@acme.example\t", "jane.smith@acme.example"),
    ("Jose\u0301@acme.example", "jos\u00e9@acme.example"),  # decomposed: composed
    ("hans@xn--bcher-kva.example", "hans@b\u00fccher.example"),  # IDNA label: its Unicode
    ("hans@XN--BCHER-KVA.example", "hans@b\u00fccher.example"),
    ("hans@B\u00dcCHER.example", "hans@b\u00fccher.example"),
    ("kenji@\uff41\uff43\uff4d\uff45\u3002example", "kenji@acme.example"),  # full-width domain
    ("kenji@acme\uff0eexample", "kenji@acme.example"),
    ("ana\u200b.lima@acme.example\ufeff", "ana.lima@acme.example"),  # invisible characters
    ("ana\u00ad.lima@acme\u2060.example", "ana.lima@acme.example"),
]


@pytest.mark.parametrize(("written", "key"), SAME)
def test_an_email_written_another_way_has_the_same_key(written: str, key: str) -> None:
    """Case, white space, Unicode form, an IDNA or full-width domain and invisible characters do
    not make another person; a key is its own key."""
    assert email_key(written) == key
    assert email_key(key) == key


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("stra\u00dfe@acme.example", "strasse@acme.example"),  # the local part is not case-folded
        ("\uff4a\uff41\uff4e\uff45@acme.example", "jane@acme.example"),  # nor width-folded
        ("jane@xn--zz.example", "jane@zz.example"),  # an IDNA label that does not decode
        ("jane@xn--abc-.example", "jane@abc.example"),  # nor one that encodes ASCII (no A-label does)
        ("jane@stra\u00dfe.example", "jane@strasse.example"),  # IDNA 2008: "ß" is not "ss"
    ],
)
def test_two_mailboxes_keep_two_keys(one: str, other: str) -> None:
    """What may name another mailbox (in the local part) or cannot be read stays apart."""
    assert email_key(one) != email_key(other)


@pytest.mark.parametrize(
    ("encoded", "unicode"),
    [
        ("bob@xn--strae-oqa.de", "bob@stra\u00dfe.de"),  # "ß": IDNA 2003 read it as "ss"
        ("bob@xn--mxac2c.example", "bob@\u03b1\u03b2\u03c2.example"),  # a Greek final sigma
        ("bob@mail.XN--STRAE-OQA.de", "bob@mail.stra\u00dfe.de"),
    ],
)
def test_an_idna2008_label_folds_to_the_unicode_domain_it_encodes(encoded: str, unicode: str) -> None:
    """An ``xn--`` label is read as the Unicode it encodes as registries and browsers encode it
    since IDNA 2008, so ``bob@xn--strae-oqa.de`` and ``bob@straße.de`` are one person. (Python's
    ``idna`` codec is IDNA 2003: it refused these labels, which were kept as sent.)"""
    assert email_key(encoded) == email_key(unicode) == unicode


@pytest.mark.parametrize(
    "listed",
    [
        "\ufeff jane@acme.example",  # a byte-order mark, then a space (a CSV export's first cell)
        "jane@acme.example \u200b",  # a space, then a zero-width space
        "jane@xn--ab-r13a.example",  # an IDNA label that decodes to "a\u3002b" (an ideographic full stop)
    ],
    ids=ascii,
)
def test_a_key_is_its_own_key(listed: str) -> None:
    """The key of a key is the key itself: records are stored under the key, and ``People.resolve``
    and the directory key it again. (White space a BOM or a zero-width space hid was kept, as was
    the ideographic full stop a decoded IDNA label held: an LMS user listed as
    ``"\\ufeff jane@..."`` was stored under ``" jane@..."`` and never matched Jane's events.)"""
    key = email_key(listed)
    assert email_key(key) == key
    assert key.strip() == key


# What email_key folds, drops or decodes, beside plain ASCII: the inputs most likely to fold twice.
_ODD = (
    " \t\u3000\u00a0\u2000"  # white space
    "\u00ad\u200b\u2060\ufeff\u200c\u200d"  # invisible (and joiners, which are kept)
    ".\u3002\uff0e\uff61@\uff20"  # dots and at signs, full-width too
    "\u00df\u1e9e\u03c2\u03a3\u0130\u212a\u00e9\u0301\u0308\uff41\uff21\ufb01\u2460\u00b4\u00a8"
)
_CHARS = st.characters(codec="utf-8") | st.sampled_from(_ODD + "aZ0-")
_TEXT = st.text(_CHARS, max_size=8)
_LABEL = _TEXT | _TEXT.map(lambda t: "xn--" + t.encode("punycode").decode("ascii")) | st.just("xn--")
_EMAILS = st.builds(
    lambda local, labels, padding: f"{padding[0]}{local}@{'.'.join(labels)}{padding[1]}",
    _TEXT,
    st.lists(_LABEL, min_size=1, max_size=4),
    st.tuples(_TEXT, _TEXT),
)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_EMAILS, st.text(_CHARS, max_size=30)))
def test_the_key_of_a_key_is_the_key(written: str) -> None:
    """For any input (e-mails with encoded, full-width or invisible parts, and any text at all),
    keying the key again changes nothing."""
    key = email_key(written)
    assert email_key(key) == key


_ASCII = st.lists(st.characters(max_codepoint=127) | st.sampled_from(["@", ".", "xn--", "XN--", " "]), max_size=20).map(
    "".join
)


@settings(max_examples=1000, deadline=None)
@given(_ASCII)
def test_an_ascii_email_gets_the_key_the_long_way_gives(written: str) -> None:
    """The fast path (an ASCII e-mail without an ``xn--`` label is only stripped and lower-cased)
    gives exactly the key folding the long way gives."""
    assert email_key(written) == _folded(written)


def _key_before_idna2008(value: str) -> str:
    """``email_key`` as released before IDNA 2008 labels were decoded (what stored keys hold)."""
    lowered = value.strip().lower()
    if lowered.isascii() and "xn--" not in lowered:
        return lowered
    local, at, domain = value.strip().translate(_INVISIBLE).rpartition("@")
    if not at:
        return unicodedata.normalize("NFC", domain.lower())

    def label(part: str) -> str:
        try:
            return part.encode("ascii").decode("idna") if part.startswith("xn--") else part
        except UnicodeError:
            return part

    domain = unicodedata.normalize("NFKC", domain).translate(_DOTS).lower()
    domain = unicodedata.normalize("NFKC", ".".join(map(label, domain.split(".")))).lower()
    return f"{unicodedata.normalize('NFC', local.lower())}@{domain}"


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_EMAILS, st.text(_CHARS, max_size=30)))
def test_a_key_stored_before_rekeys_to_the_key_the_email_gets_now(written: str) -> None:
    """A key stored by the previous ``email_key`` (records, directory), keyed again, is the key the
    same e-mail gets now: a migration re-keys stored keys with ``rekeyed`` and needs no e-mail."""
    stored = _key_before_idna2008(written)
    assert (rekeyed(stored) or stored) == email_key(written)


@pytest.mark.parametrize(
    ("stored", "now"),
    [
        ("bob@xn--strae-oqa.de", "bob@stra\u00dfe.de"),
        (" jane@acme.example", "jane@acme.example"),
        ("jane@a\u3002b.example", "jane@a.b.example"),
        ("jane@acme.example", None),
        ("hans@b\u00fccher.example", None),
        ("jane@xn--zz.example", None),
    ],
    ids=ascii,
)
def test_rekeyed_names_the_stored_keys_that_change(stored: str, now: str | None) -> None:
    """Stored keys holding an ``xn--`` label IDNA 2003 refused, white space at an end, or a decoded
    ideographic full stop change; ASCII keys, keys already decoded and undecodable labels do not."""
    assert rekeyed(stored) == now


@pytest.mark.parametrize(
    ("key", "others"),
    [
        ("jane@acme.example", []),  # ASCII: the key is the only spelling, one filter call
        ("hans@b\u00fccher.example", ["hans@xn--bcher-kva.example", "hans@bu\u0308cher.example"]),
        ("jos\u00e9@acme.example", ["jose\u0301@acme.example"]),
        (
            "jos\u00e9@b\u00fccher.example",
            ["jos\u00e9@xn--bcher-kva.example", "jose\u0301@bu\u0308cher.example", "jose\u0301@xn--bcher-kva.example"],
        ),
    ],
    ids=ascii,
)
def test_a_non_ascii_key_has_the_spellings_an_lms_filter_may_hold(key: str, others: list[str]) -> None:
    """Beside the key, an e-mail filter comparing exactly may hold the e-mail with its domain
    ``xn--``-encoded or decomposed: those are the spellings, most likely first; an ASCII key has none."""
    assert spellings(key) == others


@settings(max_examples=1000, deadline=None)
@given(_EMAILS)
def test_every_spelling_of_a_key_keys_to_it(written: str) -> None:
    """A row found by any spelling is compared by ``email_key``: each spelling keys to the key it
    was made from, and none is the key itself."""
    key = email_key(written)
    assert all(email_key(spelling) == key != spelling for spelling in spellings(key))
