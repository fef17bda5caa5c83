"""The pseudonym is a documented, reproducible keyed hash."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from operators.pseudonym import Pseudonymizer

KEY = "0123456789abcdef-test-key"


def test_pseudonym_is_the_documented_truncated_hmac():
    p = Pseudonymizer(KEY)
    expected = hmac.new(KEY.encode(), b"C-1001", hashlib.sha256).hexdigest()[:32]
    assert p("C-1001") == expected
    assert len(p("C-1001")) == 32
    assert all(c in "0123456789abcdef" for c in p("C-1001"))


def test_same_key_same_pseudonym_other_key_other_pseudonym():
    assert Pseudonymizer(KEY)("张三") == Pseudonymizer(KEY.encode())("张三")
    assert Pseudonymizer(KEY)("C-1") != Pseudonymizer(KEY + "x")("C-1")
    assert Pseudonymizer(KEY)("C-1") != Pseudonymizer(KEY)("C-2")
    assert Pseudonymizer(KEY).optional(None) is None


def test_key_never_shown_and_never_empty():
    assert KEY not in repr(Pseudonymizer(KEY))
    with pytest.raises(ValueError):
        Pseudonymizer("")
