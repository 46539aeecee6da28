"""Allow-list, settings and delivery policy: small pure checks (allow-list on SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dicomguard.gateway.allowlist import AllowList
from dicomguard.gateway.config import GatewayConfig, GatewayError, check_ae, normalize_ip, parse_host_port
from dicomguard.gateway.forwarder import backoff_delay
from dicomguard.gateway.upstream import Outcome, classify


def test_allow_list_is_default_deny_and_exact(archive) -> None:  # type: ignore[no-untyped-def]
    allow, admin = AllowList(archive.ctx.engine), archive.operator.allow_list
    assert not allow.is_allowed("CT1", "10.0.0.5")
    assert admin.allow("CT1", "10.0.0.5") is True
    assert admin.allow(" CT1 ", "10.0.0.5") is False  # already there (spaces are not significant)
    assert allow.is_allowed("CT1 ", "10.0.0.5")
    assert allow.is_allowed("CT1", "::ffff:10.0.0.5")  # IPv4-mapped IPv6 is the same peer
    assert not allow.is_allowed("CT1", "10.0.0.6")
    assert not allow.is_allowed("ct1", "10.0.0.5")  # AE titles compare exactly
    assert not allow.is_allowed("CT1\\X", "10.0.0.5")
    assert not allow.is_allowed("CT1", "not-an-ip")
    admin.allow("CT1", "10.0.0.6")
    assert [(e.ae_title, e.ip) for e in allow.entries()] == [("CT1", "10.0.0.5"), ("CT1", "10.0.0.6")]
    assert admin.deny("CT1", "10.0.0.6") == 1
    assert admin.deny("CT1") == 1
    assert allow.entries() == []
    with pytest.raises(GatewayError):
        admin.allow("CT1", "10.0.0.0/24")


@pytest.mark.parametrize("value", ["", "   ", "A" * 17, "BAD\\AE", "TAB\tAE"])
def test_ae_titles_follow_ps35(value: str) -> None:
    with pytest.raises(GatewayError):
        check_ae(value)


def test_addresses_and_ports() -> None:
    assert normalize_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalize_ip("2001:db8:0::1") == "2001:db8::1"
    assert parse_host_port("[::1]:104", "x") == ("::1", 104)
    for bad in ("host", "host:0", "host:99999", ":104"):
        with pytest.raises(GatewayError):
            parse_host_port(bad, "x")


def _config(**kw) -> GatewayConfig:  # type: ignore[no-untyped-def]
    base = dict(listen=("127.0.0.1", 11113), upstream=("pacs", 2762), upstream_ae="PACS", cert_file=Path("c"), key_file=Path("k"), ca_file=Path("a"))
    return GatewayConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_plaintext_listener_never_binds_a_wildcard(host: str) -> None:
    with pytest.raises(GatewayError, match="one interface"):
        _config(listen=(host, 11113))


@pytest.mark.parametrize("bad", [dict(max_backoff_s=0.001), dict(initial_backoff_s=5, max_backoff_s=1), dict(dead_letter_after=0), dict(max_queue_bytes=10)])
def test_bounds_are_checked_at_construction(bad: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(GatewayError):
        _config(**bad)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, Outcome.DELIVERED), (0xB000, Outcome.DELIVERED), (0xB007, Outcome.DELIVERED), (0x0111, Outcome.DELIVERED),
        (0xA700, Outcome.TRANSIENT), (0xA7FF, Outcome.TRANSIENT), (0x0213, Outcome.TRANSIENT), (None, Outcome.TRANSIENT),
        (0xA900, Outcome.PERMANENT), (0xC000, Outcome.PERMANENT), (0xC211, Outcome.PERMANENT), (0x0122, Outcome.PERMANENT),
        (0x0124, Outcome.TRANSIENT), (0x0110, Outcome.PERMANENT),
    ],
)
def test_status_classification(status: int | None, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, 60.0, rng) for n in range(1, 16)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(60.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= d <= ceiling
    assert max(delays) <= 60.0 and delays[-1] >= 30.0
    assert len({round(backoff_delay(5, 0.5, 60.0, rng), 6) for _ in range(20)}) > 1  # jittered
