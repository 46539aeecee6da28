"""Feeding context is an operation of its own, granted to no device and no role by default (default deny)."""

from __future__ import annotations

from typer.testing import CliRunner

from dicomguard.cli.main import app
from dicomguard.core.access import Action, Principal, PrincipalKind, Resource
from dicomguard.pki.devices import DEFAULT_OPERATIONS, KNOWN_OPERATIONS


def cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_context_feed_is_decided_by_the_device_registration(archive) -> None:
    assert "context-feed" in KNOWN_OPERATIONS and "context-feed" not in DEFAULT_OPERATIONS
    decide = archive.ctx.authorizer.decide

    def device(*operations: str) -> bool:
        p = Principal(PrincipalKind.DEVICE, "X", frozenset({"device"}), None, {"operations": operations, "department": ""})
        return decide(p, Action.CONTEXT_FEED, Resource.archive()).allowed

    assert [device(*ops) for ops in (DEFAULT_OPERATIONS, ("echo", "store", "query", "retrieve", "audit", "audit-relay"),
                                     ("context-feed",))] == [False, False, True]
    # not administration: an administrator or a security officer does not feed context; the operator holds every key anyway
    user = Principal(PrincipalKind.USER, "boss", frozenset({"admin", "security_officer"}))
    assert not decide(user, Action.CONTEXT_FEED, Resource.archive()).allowed
    assert decide(Principal.operator(), Action.CONTEXT_FEED, Resource.archive()).allowed
    r = cli("device", "add", "--ae", "ENGINE7", "--name", "interface engine", "--operations", "context-feed",
            "--out", str(archive.home / "engine7"))
    assert r.exit_code == 0, r.output
    r = cli("policy", "test", "--principal", "device:ENGINE7", "--action", "context-feed", "--resource", "archive")
    assert r.exit_code == 0 and "device-context-feed" in r.output
