"""The ``rarefit`` console script: serve, api, worker, migrate, keys, reap; the user verbs of ``client_commands``.

Heavy modules (torch through the app, Celery worker) are imported only by the
commands that need them, so ``rarefit keys …`` starts quickly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from launch import client_commands
from service.config import Settings, get_settings
from service.logs import configure_logging

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]  # what add_subparsers returns

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_NOT_READY = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each ``_add_*`` (and ``client_commands.register``) adds its verbs; each verb names
    its handler."""
    parser = argparse.ArgumentParser(prog="rarefit", description="Training as a service for imbalanced images.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_process_commands, _add_database_commands, _add_key_commands, client_commands.register):
        add(commands)
    return parser


def _add_process_commands(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="migrate, run the API and an embedded worker (one machine)")
    _host_port(serve)
    serve.add_argument("--concurrency", type=int, default=1, help="jobs the embedded worker runs at once")
    serve.set_defaults(handler=_serve)
    api = commands.add_parser("api", help="run only the HTTP API (uvicorn); the database must be migrated")
    _host_port(api)
    api.add_argument(
        "--workers", type=int, default=1, help="API processes, each on its own SO_REUSEPORT socket (one per core)"
    )
    api.set_defaults(handler=_api)
    worker = commands.add_parser("worker", help="run a Celery training worker")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once (one per GPU)")
    worker.add_argument(
        "--queue",
        choices=("train", "control"),
        default="train",
        help="'train' (jobs) or 'control' (experiment steps: light, no GPU; run one or two per deployment)",
    )
    worker.set_defaults(handler=_worker)


def _add_database_commands(commands: Commands) -> None:
    commands.add_parser("migrate", help="bring the database schema to the newest version").set_defaults(
        handler=_migrate
    )
    commands.add_parser("reap", help="one reaper pass: re-queue expired leases and lost messages").set_defaults(
        handler=_reap
    )


def _add_key_commands(commands: Commands) -> None:
    keys = commands.add_parser("keys", help="manage API keys")
    keys.set_defaults(handler=_keys)
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key for a tenant and print it")
    create.add_argument("--tenant", required=True, help="tenant name (created if new)")
    create.set_defaults(key_action=_keys_create)
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant", default=None, help="only this tenant's keys")
    listing.set_defaults(key_action=_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(key_action=_keys_revoke)


def _host_port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default: RAREFIT_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (default: RAREFIT_PORT)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if client_commands.is_client_command(args):
        return client_commands.run(args)
    settings = get_settings()
    configure_logging(settings)
    return args.handler(settings, args)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from launch.supervisor import serve

    if args.concurrency < 1:
        raise SystemExit(f"--concurrency must be at least 1, got {args.concurrency}")
    serve(settings, host=args.host or settings.host, port=args.port or settings.port, concurrency=args.concurrency)
    return EXIT_OK


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from launch.api_processes import APP_FACTORY, reuse_port_supported, run_api_processes

    if args.workers < 1:
        raise SystemExit(f"--workers must be at least 1, got {args.workers}")
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    if args.workers > 1 and reuse_port_supported():
        run_api_processes(host=host, port=port, workers=args.workers)
    else:
        uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=args.workers)
    return EXIT_OK


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from launch.supervisor import run_worker

    if args.concurrency < 1:
        raise SystemExit(f"--concurrency must be at least 1, got {args.concurrency}")
    run_worker(settings, concurrency=args.concurrency, queue=args.queue)
    return EXIT_OK


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from service.migrate import upgrade_head

    upgrade_head(settings.sqlalchemy_url)
    logger.info("database schema is up to date")
    return EXIT_OK


def _reap(settings: Settings, _args: argparse.Namespace) -> int:
    from service.reaper import reap_once

    result = reap_once(settings)
    logger.info("reaper pass done: %s", result)
    return EXIT_OK


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from service.db import make_engine, make_session_factory, transaction
    from service.migrate import current_revision

    engine = make_engine(settings.sqlalchemy_url)
    try:
        if current_revision(engine) is None:
            print("error: the database has no rarefit tables; run `rarefit migrate` first", file=sys.stderr)
            return EXIT_NOT_READY
        with transaction(make_session_factory(engine)) as session:
            return args.key_action(session, args)
    except OperationalError as exc:
        print(
            f"error: cannot use the database ({type(exc.orig).__name__}); is it migrated and reachable?",
            file=sys.stderr,
        )
        return EXIT_NOT_READY
    finally:
        engine.dispose()


def _keys_create(session, args: argparse.Namespace) -> int:
    from service.repository import tenants

    tenant = tenants.get_or_create_tenant(session, name=args.tenant)
    row, plaintext = tenants.create_api_key(session, tenant_id=tenant.id)
    logger.info("created API key %s for tenant %r", row.id, args.tenant)
    print(plaintext)  # the only time the key is ever shown
    return EXIT_OK


def _keys_list(session, args: argparse.Namespace) -> int:
    from service.repository import tenants

    print("id\ttenant\tprefix\tcreated\trevoked")
    for row, tenant_name in tenants.list_api_keys(session, tenant_name=args.tenant):
        revoked = row.revoked_at.isoformat() if row.revoked_at else "-"
        print(f"{row.id}\t{tenant_name}\t{row.prefix}\t{row.created_at.isoformat()}\t{revoked}")
    return EXIT_OK


def _keys_revoke(session, args: argparse.Namespace) -> int:
    from service.repository import tenants

    if not tenants.revoke_api_key(session, key_id=args.key_id):
        print(f"error: no live API key with id {args.key_id!r}", file=sys.stderr)
        return EXIT_FAILED
    print(f"revoked {args.key_id}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
