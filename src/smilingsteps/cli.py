"""Command line: smilingsteps serve | migrate | check-config.

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
