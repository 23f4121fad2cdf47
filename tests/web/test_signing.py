"""Worker-to-worker signatures: HMAC over method, target and time, within a short window."""

from __future__ import annotations

import pytest

from pipeline.web.signing import LEGACY_ROUTED, SIGNATURE, SIGNED_AT, RouteSigner, Verdict

SECRET = b"cluster-secret-0123456789abcdef"
TARGET = "/identity/email:3f2a?part=ident"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_signed_request_verifies_on_another_worker_with_the_same_secret() -> None:
    sender, owner = RouteSigner(SECRET, clock=Clock(1000.0)), RouteSigner(SECRET, clock=Clock(1010.0))
    assert owner.verify("GET", TARGET, sender.headers("GET", TARGET)) is Verdict.VALID


def test_a_request_without_routing_headers_is_unsigned() -> None:
    assert RouteSigner(SECRET).verify("GET", TARGET, {"Accept": "*/*"}) is Verdict.UNSIGNED


def test_the_old_unsigned_routing_header_alone_is_refused() -> None:
    verdict = RouteSigner(SECRET).verify("GET", "/profiles/_local/cust:C1", {LEGACY_ROUTED: "1"})
    assert verdict is Verdict.MALFORMED and verdict.refused


@pytest.mark.parametrize(("method", "target"), [
    ("POST", TARGET), ("GET", "/identity/email:3f2b?part=ident"), ("GET", "/identity/email:3f2a"),
])
def test_a_signature_does_not_carry_over_to_another_request(method: str, target: str) -> None:
    signer = RouteSigner(SECRET, clock=Clock(1000.0))
    assert signer.verify(method, target, signer.headers("GET", TARGET)) is Verdict.FORGED


def test_another_secret_is_a_forgery() -> None:
    headers = RouteSigner(b"another-secret-0123456789abcdef", clock=Clock(1000.0)).headers("GET", TARGET)
    assert RouteSigner(SECRET, clock=Clock(1000.0)).verify("GET", TARGET, headers) is Verdict.FORGED


@pytest.mark.parametrize("skew", [-31.0, 31.0, 3600.0])
def test_a_signature_outside_the_window_is_stale(skew: float) -> None:
    headers = RouteSigner(SECRET, clock=Clock(1000.0)).headers("GET", TARGET)
    assert RouteSigner(SECRET, clock=Clock(1000.0 + skew)).verify("GET", TARGET, headers) is Verdict.STALE


@pytest.mark.parametrize("headers", [
    {SIGNATURE: "00"}, {SIGNED_AT: "1000.000"}, {SIGNED_AT: "soon", SIGNATURE: "00"},
    {SIGNED_AT: "nan", SIGNATURE: "00"}, {SIGNED_AT: "inf", SIGNATURE: "00"},
])
def test_incomplete_or_unreadable_routing_headers_are_malformed(headers: dict[str, str]) -> None:
    assert RouteSigner(SECRET, clock=Clock(1000.0)).verify("GET", TARGET, headers) is Verdict.MALFORMED


def test_a_tampered_timestamp_breaks_the_signature() -> None:
    signer = RouteSigner(SECRET, clock=Clock(1000.0))
    headers = {**signer.headers("GET", TARGET), SIGNED_AT: "1001.000"}
    assert signer.verify("GET", TARGET, headers) is Verdict.FORGED


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        RouteSigner(b"short")
