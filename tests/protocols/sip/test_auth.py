"""Digest authentication: known vectors, server checks, client answers, lock-out."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sip.auth import (
    Algorithm,
    AuthStatus,
    Challenge,
    DigestClient,
    DigestServer,
    LockoutTracker,
    digest_response,
    parse_auth_params,
)
from protocols.sip.errors import SipSyntaxError
from protocols.sip.message import Request, Response, parse_message
from tests.protocols.sip.messages import INVITE

USERS = {"1001": "s3cret", "1002": "other"}


def test_rfc2617_md5_example_vector() -> None:
    assert (
        digest_response(
            Algorithm.MD5, username="Mufasa", realm="testrealm@host.com",
            password="Circle Of Life", method="GET", uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", nc="00000001", cnonce="0a4f113b",
            qop="auth",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc7616_sha256_and_md5_example_vectors() -> None:
    common = {
        "username": "Mufasa", "realm": "http-auth@example.org", "password": "Circle of Life",
        "method": "GET", "uri": "/dir/index.html",
        "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "nc": "00000001", "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "qop": "auth",
    }
    assert (
        digest_response(Algorithm.SHA256, **common)
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )
    assert digest_response(Algorithm.MD5, **common) == "8ca523f5e9506fed4657c9700eebdbec"


def test_auth_params_parse_quoted_values_with_commas() -> None:
    scheme, params = parse_auth_params(
        'Digest realm="a, b", nonce="x\\"y", algorithm=SHA-256, qop="auth,auth-int"'
    )
    assert scheme == "Digest"
    assert params == {"realm": "a, b", "nonce": 'x"y', "algorithm": "SHA-256",
                      "qop": "auth,auth-int"}


def register(user: str = "1001") -> Request:
    raw = INVITE.replace(b"INVITE sip:bob@biloxi.example.com", b"REGISTER sip:pbx.example.com")
    raw = raw.replace(b"CSeq: 314159 INVITE", b"CSeq: 1 REGISTER")
    raw = raw.replace(b"From: Alice <sip:alice@", f"From: <sip:{user}@".encode())
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def server() -> DigestServer:
    return DigestServer("pbx.example.com", b"k" * 32, nonce_ttl=300.0)


def authed(srv: DigestServer, user: str, password: str, now: float) -> Request:
    request = register(user)
    challenge = parse_message(srv.challenge_response(request, now).encode())
    assert isinstance(challenge, Response)
    assert DigestClient(user, password).authorize(request, challenge)
    return request


def test_client_answer_is_accepted_by_server() -> None:
    srv = server()
    request = authed(srv, "1001", "s3cret", now=100.0)
    result = srv.verify(request, USERS.get, now=101.0)
    assert result.ok and result.username == "1001"


def test_client_picks_the_strongest_offered_algorithm() -> None:
    srv = server()
    challenge = srv.challenge_response(register(), 0.0)
    values = challenge.headers.get_all("WWW-Authenticate")
    assert [Challenge.parse(v).algorithm for v in values] == [  # type: ignore[union-attr]
        Algorithm.SHA256, Algorithm.MD5,
    ]
    challenge.headers.set("WWW-Authenticate", values[1])
    challenge.headers.add("WWW-Authenticate", values[0])
    picked = DigestClient.pick(challenge)
    assert picked is not None and picked[1].algorithm is Algorithm.SHA256


def test_client_answers_407_with_proxy_authorization() -> None:
    srv = server()
    request = register()
    challenge = srv.challenge_response(request, 0.0, proxy=True)
    assert challenge.status == 407
    assert DigestClient("1001", "s3cret").authorize(request, challenge)
    assert request.headers.get("Proxy-Authorization") is not None
    assert srv.verify(request, USERS.get, 1.0, proxy=True).ok


def test_unknown_user_and_wrong_password_are_indistinguishable() -> None:
    srv = server()
    wrong = srv.verify(authed(srv, "1001", "guess", 0.0), USERS.get, 1.0)
    unknown = srv.verify(authed(srv, "9999", "guess", 0.0), USERS.get, 1.0)
    assert wrong == unknown
    assert wrong.status is AuthStatus.REJECTED and wrong.username is None


def test_missing_credentials_ask_for_a_challenge() -> None:
    assert server().verify(register(), USERS.get, 0.0).status is AuthStatus.MISSING


def test_expired_nonce_with_correct_password_is_stale() -> None:
    srv = server()
    request = authed(srv, "1001", "s3cret", now=0.0)
    assert srv.verify(request, USERS.get, now=301.0).status is AuthStatus.STALE
    stale = srv.challenge_response(request, 301.0, stale=True)
    assert "stale=true" in (stale.headers.get("WWW-Authenticate") or "")


def test_expired_nonce_with_wrong_password_is_rejected_not_stale() -> None:
    srv = server()
    request = authed(srv, "1001", "nope", now=0.0)
    assert srv.verify(request, USERS.get, now=301.0).status is AuthStatus.REJECTED


def test_replayed_nonce_count_is_rejected() -> None:
    srv = server()
    request = authed(srv, "1001", "s3cret", now=0.0)
    assert srv.verify(request, USERS.get, 1.0).ok
    assert srv.verify(request, USERS.get, 2.0).status is AuthStatus.REJECTED


def test_next_nonce_count_on_the_same_nonce_is_accepted() -> None:
    srv = server()
    request = register()
    challenge = srv.challenge_response(request, 0.0)
    client = DigestClient("1001", "s3cret")
    client.authorize(request, challenge)
    assert srv.verify(request, USERS.get, 1.0).ok
    client.authorize(request, challenge)
    assert "nc=00000002" in (request.headers.get("Authorization") or "")
    assert srv.verify(request, USERS.get, 2.0).ok


def test_nonce_from_another_secret_asks_again_as_stale() -> None:
    # e.g. a nonce issued before a restart: the client retries, nothing counts as a failure
    other = DigestServer("pbx.example.com", b"x" * 32)
    request = authed(other, "1001", "s3cret", now=0.0)
    assert server().verify(request, USERS.get, 1.0).status is AuthStatus.STALE


def test_stored_ha1_verifies_like_the_password() -> None:
    srv = server()
    request = authed(srv, "1001", "s3cret", now=0.0)

    def ha1(user: str, algorithm: Algorithm) -> str | None:
        return algorithm.hash(f"{user}:pbx.example.com:s3cret") if user == "1001" else None

    assert srv.verify_ha1(request, ha1, 1.0).ok
    assert srv.verify_ha1(request, lambda _u, _a: None, 1.0).status is AuthStatus.REJECTED


def test_tampered_response_is_rejected() -> None:
    srv = server()
    request = authed(srv, "1001", "s3cret", now=0.0)
    value = request.headers.get("Authorization") or ""
    request.headers.set("Authorization", value.replace("qop=auth", "qop=auth-int"))
    assert srv.verify(request, USERS.get, 1.0).status is AuthStatus.REJECTED


def test_lockout_after_n_failures_within_window_then_expires() -> None:
    tracker = LockoutTracker(max_failures=3, window=60.0, lock_for=600.0)
    assert not tracker.record_failure("198.51.100.1", 0.0)
    assert not tracker.record_failure("198.51.100.1", 10.0)
    assert not tracker.is_locked("198.51.100.1", 11.0)
    assert tracker.record_failure("198.51.100.1", 20.0)
    assert tracker.is_locked("198.51.100.1", 21.0)
    assert not tracker.is_locked("198.51.100.2", 21.0)
    assert tracker.is_locked("198.51.100.1", 619.0)
    assert not tracker.is_locked("198.51.100.1", 620.0)


def test_lockout_failures_outside_window_do_not_count() -> None:
    tracker = LockoutTracker(max_failures=3, window=60.0, lock_for=600.0)
    tracker.record_failure("a", 0.0)
    tracker.record_failure("a", 30.0)
    assert not tracker.record_failure("a", 61.0)
    tracker.record_success("a")
    assert not tracker.record_failure("a", 62.0)


def test_retry_copies_request_with_credentials_new_branch_and_next_cseq() -> None:
    srv = server()
    request = register()
    retry = DigestClient("1001", "s3cret").retry(
        request, srv.challenge_response(request, 0.0), branch="z9hG4bKretry"
    )
    assert retry is not None
    assert retry.top_via.branch == "z9hG4bKretry" and retry.cseq.seq == request.cseq.seq + 1
    assert request.headers.get("Authorization") is None  # the original is untouched
    assert srv.verify(retry, USERS.get, 1.0).ok


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_garbage_authorization_headers_never_raise(value: str) -> None:
    srv = server()
    request = register()
    request.headers.set("Authorization", value)
    assert srv.verify(request, USERS.get, 1.0).status in set(AuthStatus)
    request.headers.set("Authorization", 'Digest realm="pbx.example.com", ' + value)
    assert srv.verify(request, USERS.get, 1.0).status is not AuthStatus.OK
    with contextlib.suppress(SipSyntaxError):
        Challenge.parse(value)


def test_lockout_memory_is_bounded_under_many_sources() -> None:
    tracker = LockoutTracker(max_failures=3, window=60.0, max_sources=100)
    for i in range(1000):
        tracker.record_failure(f"198.51.{i // 256}.{i % 256}", float(i) / 1000)
    assert len(tracker._failures) <= 100
