"""Device commands: issue, list and revoke the certificates that bind devices to AE titles.

Each is one call of the device service as the local operator (``device-add``,
``device-revoke``, ``device-read``), recorded in the transaction of the change.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dicomguard.cli.common import (
    EXIT_FAILED,
    console,
    fail,
    open_archive,
    out,
    print_json,
)

DEFAULT_OPERATIONS = ("echo", "store")  # pki.devices.DEFAULT_OPERATIONS, without importing the PKI for --help

device_app = typer.Typer(help="Devices (modalities, workstations, viewers) and their certificates.", no_args_is_help=True)


@device_app.command("add")
def add(
    ae: str = typer.Option(..., "--ae", help="The device's AE title (bound into its certificate)."),
    name: str = typer.Option(..., "--name", help="A human name, e.g. 'CT room 2'."),
    out_dir: Path = typer.Option(None, "--out", help="Folder for cert.pem, key.pem, ca.pem."),
    operations: str = typer.Option(
        ",".join(DEFAULT_OPERATIONS), "--operations",
        help="Allowed: echo,store,query,retrieve,audit,audit-relay,context-feed (audit: may send audit messages about itself "
             "over syslog-TLS; audit-relay: about others too, e.g. a PACS; context-feed: may update the detection context "
             "over HL7 v2 MLLP, e.g. the interface engine).",
    ),
    cert: Path = typer.Option(None, "--cert", help="Register an existing certificate (hospital CA) instead of issuing one."),
    move_destination: str = typer.Option(None, "--move-destination", help="HOST:PORT where C-MOVE may send to this AE."),
    p12: bool = typer.Option(False, "--p12", help="Also write device.p12 (PKCS#12, password from DICOMGUARD_P12_PASSWORD)."),
    department: str = typer.Option(
        None, "--department",
        help="Department whose studies the device may query/retrieve; none: an archive-wide peer (e.g. a PACS).",
    ),
) -> None:
    """Register a device and issue its client certificate and key (shown once, written to --out)."""
    if cert is None and out_dir is None:
        fail("--out is needed to receive the issued certificate and key")
    dest = None
    if move_destination:
        host, _, port = move_destination.rpartition(":")
        if not host or not port.isdigit():
            fail("--move-destination is HOST:PORT")
        dest = (host, int(port))
    with open_archive() as archive:
        try:
            creds = archive.operator.devices.add(
                ae, name, operations=tuple(o.strip() for o in operations.split(",") if o.strip()),
                cert_pem=cert.read_bytes() if cert else None, move_destination=dest, department=department,
            )
        except ValueError as exc:
            fail(str(exc))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "cert.pem").write_bytes(creds.cert_pem)
        (out_dir / "ca.pem").write_bytes(creds.ca_pem)
        if creds.key_pem is not None:
            key_path = out_dir / "key.pem"
            key_path.touch(mode=0o600)
            key_path.write_bytes(creds.key_pem)
            if p12:
                _write_p12(out_dir / "device.p12", creds.cert_pem, creds.key_pem, creds.ca_pem, ae)
    scope = f"department {department.strip()}" if department and department.strip() else "archive-wide"
    console.print(f"device {ae} registered ({scope})" + (f"; credentials in {out_dir}" if out_dir else ""), highlight=False)


def _write_p12(path: Path, cert_pem: bytes, key_pem: bytes, ca_pem: bytes, ae: str) -> None:
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    password = os.environ.get("DICOMGUARD_P12_PASSWORD", "").encode()
    if len(password) < 12:
        fail("set DICOMGUARD_P12_PASSWORD (12+ characters) to protect the PKCS#12 file")
    key = serialization.load_pem_private_key(key_pem, None)
    data = pkcs12.serialize_key_and_certificates(
        ae.encode(), key, x509.load_pem_x509_certificate(cert_pem), [x509.load_pem_x509_certificate(ca_pem)],  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(password),
    )
    path.touch(mode=0o600)
    path.write_bytes(data)


@device_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """List registered devices."""
    with open_archive() as archive:
        devices = archive.operator.devices.list()
    rows = [
        {"ae_title": d.ae_title, "name": d.name, "operations": list(d.operations), "cert_sha256": d.cert_sha256,
         "not_after": d.not_after.isoformat(), "revoked": d.revoked, "move_destination": d.move_destination,
         "department": d.department}
        for d in devices
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("AE title", "name", "operations", "department", "expires", "revoked", title=f"{len(rows)} devices")
    for r in rows:
        table.add_row(r["ae_title"], r["name"], ",".join(r["operations"]), r["department"] or "(archive-wide)", r["not_after"][:10],
                      "yes" if r["revoked"] else "")
    out.print(table)


@device_app.command("revoke")
def revoke(ae: str = typer.Option(..., "--ae")) -> None:
    """Revoke a device's certificate: refused at its next association and its next operation."""
    from dicomguard.errors import NotFoundError

    with open_archive() as archive:
        try:
            archive.operator.devices.revoke(ae)
        except NotFoundError as exc:
            fail(str(exc), EXIT_FAILED)
    console.print(f"device {ae} revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(device_app, name="device")
