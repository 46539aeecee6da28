"""Shared CLI plumbing: exit codes, errors, passphrase prompt, output.

Commands import the archive (and everything under it) inside their functions,
so ``dicomguard --help`` loads no more than typer and rich.
"""

from __future__ import annotations

import getpass
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from dicomguard.app.archive import Archive

EXIT_OK = 0
EXIT_FAILED = 1  # some input rejected or a check failed
EXIT_USAGE = 2  # usage or configuration error

console = Console(stderr=True)
out = Console()


def setup_logging() -> None:
    # Library loggers (pynetdicom, pydicom) can quote identifiers at INFO/DEBUG: keep WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # messages may contain [brackets]
    raise typer.Exit(code)


def time_option(text: str | None, what: str) -> datetime | None:
    """An ISO time or a period back from now (``30d``, ``12h``) given on the command line; exits 2 naming ``what`` if bad."""
    if text is None:
        return None
    from dicomguard.audit.store import parse_when

    try:
        return parse_when(text)
    except ValueError as exc:
        fail(f"{what}: {exc}")


def ask_passphrase(confirm: bool = False) -> str:
    from dicomguard.app.passphrase import passphrase_from_environment
    from dicomguard.errors import ConfigurationError

    try:
        value = passphrase_from_environment()
    except ConfigurationError as exc:
        fail(str(exc))
    if value:
        return value
    if not sys.stdin.isatty():
        fail("no passphrase: set DICOMGUARD_PASSPHRASE or DICOMGUARD_PASSPHRASE_FILE (no terminal to prompt on)")
    value = getpass.getpass("Archive passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != value:
        fail("passphrases differ")
    return value


@contextmanager
def open_archive() -> Iterator[Archive]:
    """Open the archive of ``$DICOMGUARD_HOME``; configuration problems exit with code 2.

    Refusals of the policies (``AccessDenied``) and other core errors raised by the
    command exit with code 1 and their message.
    """
    from dicomguard.app.archive import Archive
    from dicomguard.config import resolve_home
    from dicomguard.errors import ConfigurationError, DicomGuardError, UnsealError

    try:
        archive = Archive.open(resolve_home(), ask_passphrase())
    except UnsealError:
        fail("cannot unseal the archive keys: wrong passphrase or damaged key file")
    except ConfigurationError as exc:
        fail(str(exc))
    try:
        yield archive
    except DicomGuardError as exc:
        fail(str(exc), EXIT_FAILED)
    finally:
        archive.close()


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (``--json``); messages go to stderr."""
    sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
    sys.stdout.flush()


def serve_listener(make: Any, name: str, ready: str, banner: str) -> Any:
    """Run a device listener until SIGTERM/SIGINT: ``make(archive)`` builds it; start and stop are recorded as the
    application ``name``; prints ``READY <ready>=<port>`` once listening. Returns the listener's stats."""
    import signal
    import time

    stopping: list[int] = []  # set by the handlers without a lock (an Event.set in a handler can deadlock the main thread)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    with open_archive() as archive:
        # Peers are devices authenticated by mutual TLS; what they send is received as theirs, not the operator's.
        operator = archive.operator
        listener = make(archive)
        try:
            listener.start()
        except OSError as exc:
            fail(f"cannot listen on {listener.host}:{listener.port}: {exc.strerror}")
        operator.operations.application(name, started=True)
        console.print(f"{banner} on {listener.host}:{listener.port}", highlight=False)
        print(f"READY {ready}={listener.port}", flush=True)
        while not stopping:
            time.sleep(0.2)
        listener.stop()
        operator.operations.application(name, started=False)
        return listener.stats
