"""The `ringfence` command: thin wrappers over the runtime and the services."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ringfence import logs
from ringfence.client import ClientError, RingfenceClient, file_id_of
from ringfence.clock import SystemClock
from ringfence.config import ConfigError, Settings, load_settings
from ringfence.crypto import CryptoError
from ringfence.privacy.inventory import render as render_inventory
from ringfence.privacy.report import collect, render
from ringfence.privacy.requests import RequestKind, SubjectRequest, Verification
from ringfence.privacy.text import required_text
from ringfence.provisioning.errors import ProvisioningError
from ringfence.provisioning.models import (
    Account,
    AccountChange,
    AccountStatus,
    UpstreamPbx,
    UpstreamTransport,
)
from ringfence.provisioning.service import NewAccount
from ringfence.runtime import DemoCredentials, Runtime, WorkerError, WorkerPlan, data_inventory
from ringfence.sandbox.server import PushSandbox, SandboxPorts
from ringfence.sip.uri import URIError, split_hostport
from ringfence.transport.loop import install_uvloop

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="ringfence: the self-hosted cloud side of a SIP softphone service.",
)
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants (providers).")
account_app = typer.Typer(no_args_is_help=True, help="Accounts of a tenant.")
admin_app = typer.Typer(no_args_is_help=True, help="Admin API access.")
token_app = typer.Typer(no_args_is_help=True, help="Admin API tokens.")
privacy_app = typer.Typer(no_args_is_help=True, help="The privacy policy's promises and data.")
app.add_typer(tenant_app, name="tenant")
app.add_typer(account_app, name="account")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(token_app, name="token")
app.add_typer(privacy_app, name="privacy")
dev_app = typer.Typer(no_args_is_help=True, help="Tools for integrators and development.")
app.add_typer(dev_app, name="dev")

T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Settings file (TOML). Default: $RINGFENCE_CONFIG, "
        "else ./ringfence.toml if present, else the embedded defaults.",
    ),
]


def _echo(text: str) -> None:
    typer.echo(text)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _config_path(path: Path | None) -> Path | None:
    if path is None and os.environ.get("RINGFENCE_CONFIG"):
        path = Path(os.environ["RINGFENCE_CONFIG"])
    if path is None and Path("ringfence.toml").exists():
        path = Path("ringfence.toml")
    return path.resolve() if path is not None else None


def _settings(path: Path | None) -> Settings:
    path = _config_path(path)
    try:
        return load_settings(path)
    except ConfigError as exc:
        raise _fail(f"invalid configuration:\n{exc}") from exc


def _run(config: Path | None, job: Callable[[Runtime], Awaitable[T]], *, migrate: bool = True) -> T:
    settings = _settings(config)

    async def main() -> T:
        runtime = Runtime(settings)
        try:
            if migrate:
                await runtime.migrate()
            return await job(runtime)
        finally:
            await runtime.aclose()

    try:
        return asyncio.run(main())
    except ProvisioningError as exc:
        raise _fail(exc.message) from exc
    except (CryptoError, ValueError) as exc:
        raise _fail(str(exc)) from exc


def _account_dict(account: Account) -> dict[str, Any]:
    return {
        "tenant": account.tenant.code,
        "username": account.username,
        "aor": account.aor,
        "status": account.status.value,
        "display_name": account.display_name,
        "e164": account.e164,
        "overrides": account.overrides,
        "config": account.config.model_dump(mode="json"),
    }


def _print_demo(runtime: Runtime, demo: DemoCredentials) -> None:
    base = runtime.settings.http.base_url()
    lines = [
        "",
        "A demo tenant was created (shown once; not stored in the clear anywhere):",
        f"  login        {demo.login}",
        f"  password     {demo.password}",
        f"  admin token  {demo.admin_token}",
        "",
        "The demo account's configuration, as JSON and as Acrobits Account XML:",
        f"  curl -s -u '{demo.login}:{demo.password}' {base}/v1/provisioning",
        f"  curl -s -u '{demo.login}:{demo.password}' '{base}/v1/provisioning?format=xml'",
        "The admin API:",
        f"  curl -s -H 'Authorization: Bearer {demo.admin_token}' {base}/admin/v1/tenants",
    ]
    if runtime.settings.sip.enabled:
        sip = runtime.settings.sip
        lines += [
            "A SIP phone: account sip:alice@demo.localhost, the password above, outbound "
            f"proxy {sip.public_host or sip.host}:{sip.udp_port or sip.tcp_port}.",
        ]
    lines.append("")
    _echo("\n".join(lines))


@app.command()
def serve(
    config: ConfigOption = None,
    demo: Annotated[bool, typer.Option(help="Create a demo tenant on an empty database.")] = False,
) -> None:
    """Migrate, then serve the HTTP API until interrupted."""
    settings = _settings(config)
    logs.setup(settings.logging.level, json_lines=settings.logging.json_lines)
    path = _config_path(config)
    # The other SIP workers: this program again, on the same settings file and environment.
    worker_command = [sys.executable, "-m", "ringfence", "sip-worker"]
    if path is not None:
        worker_command += ["--config", str(path)]

    async def main() -> None:
        runtime = Runtime(settings, worker_command=worker_command)
        try:
            await runtime.migrate()
            if demo and (credentials := await runtime.seed_demo()) is not None:
                _print_demo(runtime, credentials)
            if sip := await runtime.start_sip():
                _echo(sip)
            _echo(
                f"ringfence {settings.http.base_url()}  (OpenAPI at /openapi.json, docs at "
                f"/docs; data in {settings.storage.data_dir.resolve()})"
            )
            await runtime.serve()
        finally:
            await runtime.aclose()

    install_uvloop()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except (CryptoError, ValueError, WorkerError) as exc:
        raise _fail(str(exc)) from exc


@app.command("sip-worker", hidden=True)
def sip_worker(
    plan: Annotated[str, typer.Option(help="JSON from the parent: file descriptors.")],
    config: ConfigOption = None,
) -> None:
    """One more SIP worker process, started by `serve` when sip.workers > 1."""
    settings = _settings(config)
    logs.setup(settings.logging.level, json_lines=settings.logging.json_lines)
    try:
        given = json.loads(plan)
        sockets = {name: socket.socket(fileno=fd) for name, fd in given["sockets"].items()}
        peers = {int(peer): socket.socket(fileno=fd) for peer, fd in given["peers"].items()}
        worker = WorkerPlan(given["index"], given["size"], sockets, peers)
        parent: int = given["parent"]
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise _fail(f"bad --plan: {exc}") from exc

    async def main() -> None:
        runtime = Runtime(settings, worker=worker.index)
        try:
            await runtime.serve_worker(worker, parent)
        finally:
            await runtime.aclose()

    install_uvloop()
    asyncio.run(main())


@dev_app.command("push-sandbox")
def dev_push_sandbox(
    directory: Annotated[
        Path, typer.Option(help="Where the stand-ins' key, service account and certificate go.")
    ] = Path("var/push-sandbox"),
    apns_port: Annotated[int, typer.Option(help="APNs production (0: any free port).")] = 8443,
    apns_sandbox_port: Annotated[int, typer.Option(help="APNs development environment.")] = 8444,
    fcm_port: Annotated[int, typer.Option(help="Google's token endpoint and FCM.")] = 8445,
) -> None:
    """Run local stand-ins for APNs and FCM, and print the settings that send to them.

    The stand-ins follow Apple's and Google's published contracts (HTTP/2 over TLS, JWT
    checks, payload limits, error replies); pushes they accept are listed as JSON at
    `<url>/sandbox/pushes`.
    """

    async def main() -> None:
        ports = SandboxPorts(apns=apns_port, apns_sandbox=apns_sandbox_port, fcm=fcm_port)
        async with PushSandbox(directory, SystemClock(), ports=ports) as box:
            _echo(f"APNs (production)  {box.apns_url}/3/device/<token>")
            _echo(f"APNs (sandbox)     {box.apns_sandbox_url}/3/device/<token>")
            _echo(f"FCM                {box.fcm_url}/v1/projects/{box.project_id}/messages:send")
            _echo("pushes received:   GET <url>/sandbox/pushes\n\nAdd to ringfence.toml:\n")
            _echo(box.toml())
            await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise _fail(f"cannot start the push sandbox: {exc}") from exc


ServerOption = Annotated[
    str, typer.Option("--server", help="The service's URL, e.g. https://rf.example.")
]
LoginOption = Annotated[str, typer.Option("--login", help="Your account: user@domain.")]
PasswordOption = Annotated[
    str | None,
    typer.Option(
        envvar="RF_PASSWORD",
        show_envvar=True,
        help="Your password. Prefer the environment variable RF_PASSWORD or --password-file "
        "over the command line, which other users can see.",
    ),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        "--password-file", dir_okay=False, help="A file whose first line is your password."
    ),
]
CaOption = Annotated[
    Path | None,
    typer.Option("--ca", help="CA bundle (PEM) to check the service's TLS certificate with."),
]


def _client_failure(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _user_client(
    server: str, login: str, password: str | None, password_file: Path | None, ca: Path | None
) -> RingfenceClient:
    """A client for the user's own account; the password never appears in any output."""
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise _client_failure(f"cannot read the password file: {exc.strerror}") from exc
        password = lines[0] if lines else ""
    if not password:
        raise _client_failure("no password: set RF_PASSWORD, or give --password-file")
    if "@" not in login:
        raise _client_failure("--login: user@domain")
    try:
        return RingfenceClient(server, login, password, verify=str(ca) if ca else True)
    except (OSError, ValueError) as exc:
        raise _client_failure(f"cannot set up the connection: {exc}") from exc


@app.command("send-file")
def send_file(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The file.")
    ],
    to: Annotated[str, typer.Option("--to", help="The recipient: a user name or sip: URI.")],
    server: ServerOption,
    login: LoginOption,
    text: Annotated[str, typer.Option(help="A text to go with the file.")] = "",
    password: PasswordOption = None,
    password_file: PasswordFileOption = None,
    ca: CaOption = None,
) -> None:
    """Encrypt a file on this machine, upload it, and message its key to the recipient.

    The service only ever holds the encrypted file; the key travels in the message (P9).
    Prints the file's id, size and SHA-256; exit 1 with the reason if anything fails.
    """
    with _user_client(server, login, password, password_file, ca) as client:
        try:
            sent = client.send_file(file, to, text)
        except ClientError as exc:
            raise _client_failure(str(exc)) from exc
        except OSError as exc:
            raise _client_failure(f"{file}: {exc.strerror or exc}") from exc
    _echo(
        f"sent {file.name} to {to}: file {sent.file_id}, {sent.plain_size} bytes "
        f"({sent.size} encrypted), sha256 {sent.sha256.hex()}, message {sent.state}"
        + (f" (seq {sent.seq})" if sent.seq is not None else "")
    )


@app.command("fetch-file")
def fetch_file(
    server: ServerOption,
    login: LoginOption,
    dest: Annotated[
        Path, typer.Option(file_okay=False, help="Where the files go (created if missing).")
    ],
    after: Annotated[int, typer.Option(min=0, help="Only messages after this history cursor.")] = 0,
    password: PasswordOption = None,
    password_file: PasswordFileOption = None,
    ca: CaOption = None,
) -> None:
    """Download and decrypt every file sent to you, checking each one's SHA-256.

    A file that does not decrypt (cut short, altered, not the one announced) is not kept.
    Prints one line per file and the cursor to give as --after next time; exit 1 if any
    file failed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    failed = 0
    with _user_client(server, login, password, password_file, ca) as client:
        try:
            received = client.received_files(after)
        except ClientError as exc:
            raise _client_failure(str(exc)) from exc
        cursor = after
        for message, files in received:
            cursor = max(cursor, int(message["seq"]))
            for attachment in files.attachments:
                file_id = file_id_of(attachment.url)
                try:
                    path = client.download_attachment(attachment, dest)
                except (ClientError, OSError) as exc:
                    failed += 1
                    typer.echo(f"error: file {file_id} from {message['peer']}: {exc}", err=True)
                    continue
                _echo(
                    f"fetched {path} from {message['peer']}: file {file_id}, "
                    f"{attachment.plain_size} bytes, sha256 {attachment.sha256.hex()}"
                )
    _echo(f"{len(received)} file message(s); next time: --after {cursor}")
    if failed:
        raise typer.Exit(code=1)


@app.command()
def migrate(
    config: ConfigOption = None,
    finish_erasures: Annotated[
        bool,
        typer.Option(
            help="Accounts whose key is destroyed are erasures a stopped node did not "
            "finish: erase and record them (storage revision 0003)."
        ),
    ] = False,
) -> None:
    """Bring both databases (main and key store) to the newest schema."""

    async def job(runtime: Runtime) -> None:
        await runtime.migrate(finish_erasures=finish_erasures)

    _run(config, job, migrate=False)
    _echo("databases are at the newest schema")


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="The TOML file to check.")]) -> None:
    """Validate a settings file (and the RINGFENCE_* environment); exit 2 naming each error."""
    try:
        load_settings(path)
    except ConfigError as exc:
        raise _fail(f"invalid configuration:\n{exc}") from exc
    _echo(f"{path}: valid")


@tenant_app.command("add")
def tenant_add(
    code: str,
    domain: Annotated[str, typer.Option("--domain", help="The tenant's SIP domain.")],
    name: Annotated[str | None, typer.Option(help="Display name; default: the code.")] = None,
    upstream: Annotated[
        str | None,
        typer.Option(help="Overlay mode: the tenant's PBX as HOST[:PORT] (default: standalone)."),
    ] = None,
    upstream_transport: Annotated[
        str, typer.Option(help="How to reach the PBX: udp, tcp or tls.")
    ] = "udp",
    upstream_expires: Annotated[
        int, typer.Option(help="The registration interval to ask the PBX for, in seconds.")
    ] = 3600,
    config: ConfigOption = None,
) -> None:
    """Create a tenant (with --upstream: in overlay mode, beside the provider's PBX)."""
    pbx = None
    if upstream is not None:
        try:
            host, port = split_hostport(upstream)
            transport = UpstreamTransport(upstream_transport.lower())
        except (URIError, ValueError) as exc:
            raise _fail(f"--upstream/--upstream-transport: {exc}") from exc
        pbx = UpstreamPbx(host.lower(), port, transport, expires_s=upstream_expires)
    tenant = _run(
        config,
        lambda rt: rt.provisioning.create_tenant(code, name or code, domain, upstream=pbx),
    )
    mode = f", overlay on {upstream}" if upstream else ""
    _echo(f"tenant {tenant.code} ({tenant.sip_domain}{mode}) created")


@tenant_app.command("list")
def tenant_list(config: ConfigOption = None) -> None:
    """List tenants."""
    for tenant in _run(config, lambda rt: rt.provisioning.tenants()):
        _echo(f"{tenant.code}\t{tenant.sip_domain}\t{tenant.name}")


@account_app.command("add")
def account_add(
    tenant: str,
    username: str,
    password: Annotated[
        str | None,
        typer.Option(
            envvar="RINGFENCE_NEW_PASSWORD",
            help="Default: a random one, printed once. Prefer the environment variable "
            "RINGFENCE_NEW_PASSWORD over the command line, which other users can see.",
        ),
    ] = None,
    display_name: Annotated[str | None, typer.Option()] = None,
    e164: Annotated[str | None, typer.Option(help="E.164 number, e.g. +41445551234")] = None,
    email: Annotated[str | None, typer.Option(help="Where policy notices go")] = None,
    config: ConfigOption = None,
) -> None:
    """Create an account."""
    secret = password or secrets.token_urlsafe(12)
    account = _run(
        config,
        lambda rt: rt.provisioning.create_account(
            tenant, username, secret, display_name=display_name, e164=e164, email=email
        ),
    )
    _echo(f"account {account.username}@{account.tenant.code} created ({account.aor})")
    if password is None:
        _echo(f"password: {secret}")


@account_app.command("import")
def account_import(
    tenant: str,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV with a header row: username,password and optionally display_name,e164,email",
        ),
    ],
    config: ConfigOption = None,
) -> None:
    """Create many accounts from a CSV file: all rows are checked before any is written."""
    rows = _read_accounts_csv(file)
    count = _run(config, lambda rt: rt.provisioning.import_accounts(tenant, rows))
    _echo(f"{count} accounts created in {tenant}")


def _read_accounts_csv(file: Path) -> list[NewAccount]:
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        missing = {"username", "password"} - columns
        if missing:
            raise _fail(f"{file.name}: the header row lacks {', '.join(sorted(missing))}")
        unknown = columns - {"username", "password", "display_name", "e164", "email"}
        if unknown:
            raise _fail(f"{file.name}: unknown columns {', '.join(sorted(unknown))}")
        return [
            NewAccount(
                username=row["username"] or "",
                password=row["password"] or "",
                display_name=row.get("display_name") or None,
                e164=row.get("e164") or None,
                email=row.get("email") or None,
            )
            for row in reader
        ]


@account_app.command("list")
def account_list(tenant: str, config: ConfigOption = None) -> None:
    """List a tenant's accounts."""
    for account in _run(config, lambda rt: rt.provisioning.accounts(tenant, limit=500)):
        _echo(f"{account.username}\t{account.status.value}\t{account.display_name or ''}")


@account_app.command("show")
def account_show(tenant: str, username: str, config: ConfigOption = None) -> None:
    """Show an account and its effective configuration as JSON."""
    account = _run(config, lambda rt: rt.provisioning.account(tenant, username))
    _echo(json.dumps(_account_dict(account), indent=2))


def _parse_assignment(text: str) -> dict[str, Any]:
    """`push.mode=keepalive` → {"push": {"mode": "keepalive"}}; values are JSON or strings."""
    key, eq, raw = text.partition("=")
    if not eq or not key:
        raise _fail(f"--set {text!r}: expected feature.key=value")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    tree: dict[str, Any] = {}
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return tree


@account_app.command("set")
def account_set(
    tenant: str,
    username: str,
    password: Annotated[
        str | None,
        typer.Option(envvar="RINGFENCE_NEW_PASSWORD", help="New password; revokes all tokens."),
    ] = None,
    display_name: Annotated[str | None, typer.Option()] = None,
    e164: Annotated[str | None, typer.Option()] = None,
    status: Annotated[AccountStatus | None, typer.Option()] = None,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a feature switch, e.g. --set push.mode=keepalive "
            "--set blf.enabled=true; value null removes the override.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Change an account."""
    overrides: dict[str, Any] | None = None
    for assignment in assignments or []:
        tree = _parse_assignment(assignment)
        overrides = overrides or {}
        for feature, values in tree.items():
            overrides.setdefault(feature, {}).update(values if isinstance(values, dict) else {})
            if not isinstance(values, dict):
                raise _fail(f"--set {assignment!r}: expected feature.key=value")
    change = AccountChange(
        display_name=display_name, e164=e164, status=status, password=password, overrides=overrides
    )
    account = _run(config, lambda rt: rt.provisioning.update_account(tenant, username, change))
    _echo(json.dumps(_account_dict(account), indent=2))


@token_app.command("create")
def admin_token_create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. 'ops-console'.")],
    config: ConfigOption = None,
) -> None:
    """Create an admin API token; it is printed once and stored only as a hash."""
    _token, secret = _run(config, lambda rt: rt.auth.create_admin_token(name))
    _echo(secret)


@privacy_app.command("inventory")
def privacy_inventory() -> None:
    """The personal data ringfence keeps: category, purpose, legal basis, retention, where."""
    _echo(render_inventory(data_inventory()))


@privacy_app.command("request")
def privacy_request(
    tenant: str,
    username: str,
    kind: Annotated[RequestKind, typer.Argument(help="confirmation, access or erasure (P19)")],
    verified_by: Annotated[str, typer.Option(help="Who checked the requester's identity.")],
    evidence: Annotated[str, typer.Option(help="How the identity was checked (P21).")],
    export: Annotated[
        Path | None, typer.Option(help="For access: write the bundle to this file (0600).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Take a data-subject request whose requester an operator has verified."""
    if kind not in (RequestKind.CONFIRMATION, RequestKind.ACCESS, RequestKind.ERASURE):
        raise _fail("kind: confirmation, access or erasure here; rectify with `account set`")

    async def job(runtime: Runtime) -> tuple[SubjectRequest, dict[str, Any] | None]:
        required_text("verified_by", verified_by, 200)
        required_text("evidence", evidence, 4000)
        subject = await runtime.provisioning.account_id(tenant, username)
        request, _ = await runtime.subject_rights.submit(subject, kind, Verification.OPERATOR)
        bundle = None
        if export is not None and request.kind is RequestKind.ACCESS:
            bundle = await runtime.subject_rights.export(subject, request.id)
        return request, bundle

    _report_request(*_run(config, job), export)


def _report_request(
    request: SubjectRequest, bundle: dict[str, Any] | None, export: Path | None
) -> None:
    if bundle is not None and export is not None:
        # Personal data: readable by the operator's user only.
        export.touch(mode=0o600)
        export.write_text(json.dumps(bundle, indent=2, default=str))
    _echo(
        f"request {request.id}: {request.kind.value}, {request.state.value}"
        f" ({request.outcome}); due {request.due_at:%Y-%m-%d}"
    )


@privacy_app.command("code-request")
def privacy_code_request(
    tenant: str,
    username: str,
    kind: Annotated[RequestKind, typer.Argument(help="confirmation, access or erasure (P19)")],
    config: ConfigOption = None,
) -> None:
    """Take a request and text a code to the account's number of record to verify it (P21).

    The requester reads the code back; `ringfence privacy code` checks it. Needs `[sms] url`.
    """

    async def job(runtime: Runtime) -> tuple[SubjectRequest, bool]:
        subject = await runtime.provisioning.account_id(tenant, username)
        return await runtime.subject_rights.receive_by_code(subject, kind)

    request, new = _run(config, job)
    if new:
        _echo(f"request {request.id}: code sent to the number of record, valid 15 minutes")
    else:
        _echo(f"request {request.id} of this kind is open ({request.state.value})")


@privacy_app.command("code")
def privacy_code(
    request_id: str,
    code: str,
    export: Annotated[
        Path | None, typer.Option(help="For access: write the bundle to this file (0600).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Check the code a requester read back; right, the request is carried out."""

    async def job(runtime: Runtime) -> tuple[SubjectRequest, dict[str, Any] | None]:
        request = await runtime.subject_rights.confirm_code(request_id, code)
        bundle = None
        if export is not None and request.kind is RequestKind.ACCESS:
            bundle = await runtime.subject_rights.export(request.subject, request.id)
        return request, bundle

    _report_request(*_run(config, job), export)


@privacy_app.command("overdue")
def privacy_overdue(config: ConfigOption = None) -> None:
    """Open data-subject requests past their 30 days (P21); exit 1 if there are any."""
    overdue = _run(config, lambda rt: rt.subject_rights.overdue())
    for request in overdue:
        _echo(f"{request.id}  {request.kind.value}  received {request.received_at:%Y-%m-%d}")
    if overdue:
        raise typer.Exit(code=1)


@privacy_app.command("report")
def privacy_report(
    tests: Annotated[
        Path, typer.Option(help="The test suite to read (the repository's tests/).")
    ] = Path("tests"),
) -> None:
    """Every promise of the privacy policy with the tests that carry its id."""
    try:
        report = collect(tests)
    except (OSError, SyntaxError) as exc:
        raise _fail(str(exc)) from exc
    _echo(render(report))
    if report.unknown:
        raise typer.Exit(code=1)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # pragma: no cover - `ringfence ... | head`
        sys.exit(0)
