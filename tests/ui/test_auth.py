"""Sessions and CSRF tokens: signed, expiring, naming a key (and a virtual key's stored HMAC)."""

from __future__ import annotations

import pytest

from gearshift.ui import auth


def test_a_session_names_its_key_until_it_expires() -> None:
    cookie = auth.session_cookie("ops", now=1000.0)
    assert auth.session_of(cookie, now=1001.0) == ("ops", "")
    assert auth.session_of(cookie, now=1000.0 + auth.SESSION_SECONDS + 1) is None
    virtual = auth.session_cookie("search-admin", "ab" * 32, now=1000.0)
    assert auth.session_of(virtual, now=1001.0) == ("search-admin", "ab" * 32)


@pytest.mark.parametrize("forged", ["", "ops", "ops|99999999999||00", "admin|99999999999||{sig}",
                                    "ops|99999999999|{ref}|{sig}", "ops|1|2|3", "ops|1|2"])
def test_a_forged_or_altered_cookie_is_no_session(forged: str) -> None:
    sig = auth.session_cookie("ops").rsplit("|", 1)[1]
    assert auth.session_of(forged.format(sig=sig, ref="ff" * 32)) is None


def test_the_secret_from_the_environment_signs_for_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.SECRET_ENV, "shared-between-replicas")
    cookie = auth.session_cookie("ops")
    assert auth.session_of(cookie) == ("ops", "")
    monkeypatch.setenv(auth.SECRET_ENV, "another")
    assert auth.session_of(cookie) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    a, b = auth.session_cookie("ops", now=1.0), auth.session_cookie("ops", now=2.0)
    assert auth.csrf_ok(a, auth.csrf_token(a)) and not auth.csrf_ok(a, auth.csrf_token(b))
    assert not auth.csrf_ok(a, None) and not auth.csrf_ok(a, "")
