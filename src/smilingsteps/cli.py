"""Command line: smilingsteps serve | worker | migrate | check-config | create-admin | audit verify | mpesa-simulator.

Every command validates the configuration first; a bad value prints one line
per problem naming the variable and exits 2, with no traceback. Any other
start-up failure prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import structlog

from smilingsteps import __version__
from smilingsteps.config import AppEnv, ConfigError, Settings

EXIT_CONFIG = 2
EXIT_STARTUP = 1
log = structlog.get_logger("smilingsteps.cli")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def load_settings_or_exit() -> Settings:
    try:
        settings = Settings.load()
    except ConfigError as exc:
        for problem in exc.problems:
            _err(f"config error: {problem}")
        raise SystemExit(EXIT_CONFIG) from None
    problems = settings.startup_problems()
    if problems:
        for problem in problems:
            _err(f"config error: {problem}")
        _err(f"refusing to start with APP_ENV={settings.APP_ENV.value}; fix the variables above")
        raise SystemExit(EXIT_CONFIG)
    return settings


def cmd_check_config(_: argparse.Namespace) -> int:
    try:
        settings = Settings.load()
    except ConfigError as exc:
        for problem in exc.problems:
            _out(f"error: {problem}")
        return EXIT_CONFIG
    width = max(len(name) for name in settings.masked())
    for name, value in settings.masked().items():
        _out(f"{name.ljust(width)}  {value}")
    problems = settings.production_problems()
    _out("")
    if not problems:
        _out("production check: ok")
        return 0
    _out(f"production check: {len(problems)} problem(s) production would refuse to start with:")
    for problem in problems:
        _out(f"  - {problem}")
    return EXIT_CONFIG if settings.is_deployed else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit()
    from smilingsteps.platform import migrate
    from smilingsteps.platform.logging import configure_logging

    configure_logging(settings)
    if args.direction == "downgrade":
        migrate.downgrade(settings.database_url, args.revision)
    else:
        migrate.upgrade(settings.database_url, args.revision)
    log.info("migrations_done", direction=args.direction, revision=args.revision)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit()
    from smilingsteps.app import create_app
    from smilingsteps.platform import migrate
    from smilingsteps.platform.logging import configure_logging
    from smilingsteps.platform.server import build_server

    configure_logging(settings)
    host = args.host or settings.HOST
    port = args.port if args.port is not None else settings.PORT
    if settings.APP_ENV is AppEnv.DEVELOPMENT:
        # The embedded default must work on a fresh checkout with no setup step;
        # deployed environments migrate as a release step instead.
        migrate.upgrade(settings.database_url)
    server = build_server(create_app(settings), settings, host=host, port=port)
    log.info(
        f"Smiling Steps is running at http://{host}:{port}",
        url=f"http://{host}:{port}",
        public_url=settings.PUBLIC_BASE_URL,
        version=__version__,
    )
    server.run()
    return 0 if server.started else EXIT_STARTUP


def cmd_worker(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit()
    import asyncio

    from smilingsteps.domains import periodic_jobs
    from smilingsteps.platform import migrate
    from smilingsteps.platform.jobs import run_worker
    from smilingsteps.platform.logging import configure_logging

    configure_logging(settings)
    if settings.APP_ENV is AppEnv.DEVELOPMENT:
        migrate.upgrade(settings.database_url)  # as `serve` does: no setup step on a fresh checkout
    return asyncio.run(run_worker(settings, periodic_jobs, once=args.once))


def _read_new_password() -> str:
    """Asked for, never taken as an argument (it would land in shell history and `ps`).

    From a terminal it is typed twice without echo; piped, the first two lines of stdin.
    """
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("Password for the new administrator: ")
        second = getpass.getpass("Repeat the password: ")
    else:
        first = sys.stdin.readline().rstrip("\n")
        second = sys.stdin.readline().rstrip("\n")
    if first != second:
        raise ValueError("the two passwords differ")
    return first


def cmd_create_admin(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit()
    import asyncio

    from smilingsteps.accounts import service
    from smilingsteps.accounts.schemas import normalise_email, normalise_phone
    from smilingsteps.accounts.security import build_auth_kit
    from smilingsteps.platform.clock import system_clock, utc_from
    from smilingsteps.platform.db import Database
    from smilingsteps.platform.errors import AppError
    from smilingsteps.platform.logging import configure_logging
    from smilingsteps.platform.runtime import build_encryptor

    configure_logging(settings)
    try:
        email = normalise_email(args.email)
        phone = normalise_phone(args.phone)
        password = _read_new_password()
    except ValueError as exc:
        _err(f"create-admin: {exc}")
        return EXIT_CONFIG
    full_name = args.name.strip()
    if not full_name or len(full_name) > 120:
        _err("create-admin: --name must be 1 to 120 characters")
        return EXIT_CONFIG

    async def create() -> str:
        database = Database(settings)
        kit = build_auth_kit(settings, build_encryptor(settings))
        try:
            if not await database.connect_with_retry():
                raise RuntimeError("the database is unreachable (see the log for each attempt)")
            async with database.session() as session:
                user = await service.create_admin(
                    session,
                    kit,
                    email=email,
                    full_name=full_name,
                    phone=phone,
                    password=password,
                    now=utc_from(system_clock),
                )
                return str(user.id)
        finally:
            await database.dispose()

    try:
        user_id = asyncio.run(create())
    except AppError as exc:
        _err(f"create-admin: {exc.detail}")
        return EXIT_CONFIG
    _out(f"administrator created: {email} (id {user_id}); sign in and enrol two-factor authentication")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit()
    import asyncio

    from smilingsteps.audit.service import ChainAnchor, ChainReport, verify_chain
    from smilingsteps.platform.db import Database
    from smilingsteps.platform.logging import configure_logging

    configure_logging(settings)
    try:
        anchor = ChainAnchor.parse(args.anchor) if args.anchor else None
    except ValueError as exc:
        _err(f"--anchor: {exc}")
        return EXIT_CONFIG

    async def verify() -> ChainReport:
        database = Database(settings)
        try:
            return await verify_chain(database, batch_size=args.batch_size, anchor=anchor)
        finally:
            await database.dispose()

    report = asyncio.run(verify())
    if report.first_broken is not None:
        _out(f"audit chain BROKEN after {report.checked} row(s) checked")
        _out(f"first broken row: {report.first_broken.describe()}")
        if report.head_seq is not None:
            _out(f"last good row: seq={report.head_seq} hash={report.head_hash}")
        return 1
    if report.head_seq is None:
        _out("audit chain ok: 0 rows checked (the log is empty)")
    else:
        _out(f"audit chain ok: {report.checked} rows checked")
        # One line an operator can copy elsewhere and later pass back as --anchor.
        _out(f"head: {report.head_seq}:{report.head_hash}")
    return 0


def cmd_mpesa_simulator(args: argparse.Namespace) -> int:
    """A local Daraja for development and tests: credentials from the MPESA_* variables, or the simulator's own."""
    settings = load_settings_or_exit()
    if settings.is_production:
        _err("mpesa-simulator is for development and tests; it never runs with APP_ENV=production")
        return EXIT_CONFIG
    import asyncio

    from smilingsteps.payments.mpesa import simulator
    from smilingsteps.platform.logging import configure_logging

    configure_logging(settings)
    key, secret, passkey = settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET, settings.MPESA_PASSKEY
    daraja = simulator.DarajaSimulator(
        consumer_key=key.get_secret_value() if key else simulator.DEFAULT_KEY,
        consumer_secret=secret.get_secret_value() if secret else simulator.DEFAULT_SECRET,
        shortcode=settings.MPESA_SHORTCODE or simulator.DEFAULT_SHORTCODE,
        passkey=passkey.get_secret_value() if passkey else simulator.DEFAULT_PASSKEY,
        delay=args.delay if args.delay is not None else settings.MPESA_SIMULATOR_DELAY,
    )
    asyncio.run(simulator.run_forever(daraja, host=args.host, port=args.port))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smilingsteps", description="Smiling Steps teletherapy platform")
    parser.add_argument("--version", action="version", version=f"smilingsteps {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the web application")
    serve.add_argument("--host", default=None, help="bind address (default: HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default: PORT)")
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("direction", nargs="?", choices=("upgrade", "downgrade"), default="upgrade")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(handler=cmd_migrate)

    check = commands.add_parser("check-config", help="print settings (secrets masked) and production problems")
    check.set_defaults(handler=cmd_check_config)

    worker = commands.add_parser("worker", help="run background jobs (email outbox…) until SIGTERM")
    worker.add_argument("--once", action="store_true", help="run each job once (send what is due) and exit")
    worker.set_defaults(handler=cmd_worker)

    admin = commands.add_parser(
        "create-admin", help="create an administrator; the password is prompted for (or read from stdin)"
    )
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", required=True, help="full name")
    admin.add_argument("--phone", required=True, help="Kenyan mobile number, e.g. 0712345678")
    admin.set_defaults(handler=cmd_create_admin)

    audit = commands.add_parser("audit", help="audit log tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check the audit log's hash chain; exit 1 naming the first broken row"
    )
    verify.add_argument("--batch-size", type=_positive_int, default=1000, help="rows read per query (default 1000)")
    verify.add_argument(
        "--anchor", metavar="SEQ:HASH", default=None, help="an earlier run's head; fail unless it still holds"
    )
    verify.set_defaults(handler=cmd_audit_verify)

    daraja = commands.add_parser(
        "mpesa-simulator", help="run a local Daraja (OAuth, STK push and query, callbacks) for development"
    )
    daraja.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    daraja.add_argument("--port", type=int, default=8089, help="port (default 8089)")
    daraja.add_argument(
        "--delay", type=float, default=None, help="seconds before calling back (default: MPESA_SIMULATOR_DELAY)"
    )
    daraja.set_defaults(handler=cmd_mpesa_simulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # One clear line; the full trace goes to the log if logging is configured.
        log.debug("startup_failed", exc_info=exc)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        _err(f"smilingsteps {args.command} failed: {type(exc).__name__}: {first_line}")
        return EXIT_STARTUP


if __name__ == "__main__":
    raise SystemExit(main())
