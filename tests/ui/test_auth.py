"""Sessions and CSRF tokens: signed, expiring, bound to an admin key still in force."""

from __future__ import annotations

import pytest

from gearshift.ui import auth

ADMINS = {"ops": b"sk-admin"}


def test_a_session_names_its_admin_key_until_it_expires_or_the_key_goes() -> None:
    cookie = auth.session_cookie("ops", now=1000.0)
    assert auth.session_name(cookie, ADMINS, now=1001.0) == "ops"
    assert auth.session_name(cookie, ADMINS, now=1000.0 + auth.SESSION_SECONDS + 1) is None
    assert auth.session_name(cookie, {"other": b"x"}, now=1001.0) is None  # the key is no longer an admin


@pytest.mark.parametrize("forged", ["", "ops", "ops|99999999999|00", "admin|99999999999|{sig}", "ops|1|2|3"])
def test_a_forged_or_altered_cookie_is_no_session(forged: str) -> None:
    sig = auth.session_cookie("ops").rsplit("|", 1)[1]
    assert auth.session_name(forged.format(sig=sig), {**ADMINS, "admin": b"y"}) is None


def test_the_secret_from_the_environment_signs_for_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.SECRET_ENV, "shared-between-replicas")
    cookie = auth.session_cookie("ops")
    assert auth.session_name(cookie, ADMINS) == "ops"
    monkeypatch.setenv(auth.SECRET_ENV, "another")
    assert auth.session_name(cookie, ADMINS) is None


def test_csrf_tokens_belong_to_one_session_and_keys_match_in_full() -> None:
    a, b = auth.session_cookie("ops", now=1.0), auth.session_cookie("ops", now=2.0)
    assert auth.csrf_ok(a, auth.csrf_token(a)) and not auth.csrf_ok(a, auth.csrf_token(b))
    assert not auth.csrf_ok(a, None) and not auth.csrf_ok(a, "")
    assert auth.admin_named("sk-admin", ADMINS) == "ops"
    assert auth.admin_named("sk-admi", ADMINS) is None and auth.admin_named("", {"empty": b""}) is None
