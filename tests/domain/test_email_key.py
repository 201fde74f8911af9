"""The person key: one e-mail written several ways is one key, two mailboxes stay two."""

from __future__ import annotations

import pytest

from lmsbridge.domain.events import email_key

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
