"""``rotwatch gateway run``: the prediction + feedback HTTP API (uvicorn).

Locally it uses the emulators when ``PUBSUB_EMULATOR_HOST`` / ``DATASTORE_EMULATOR_HOST``
are set (``rotwatch up`` or ``rotwatch emulators start`` prints them); in Cloud Run
the same command listens on ``$PORT`` with the service account's credentials.

    rotwatch gateway run [--host 127.0.0.1] [--port 8080] [--token-file FILE]
"""
from __future__ import annotations

import argparse
import logging
import os

from rotwatch.config import add_settings_flags, settings_from_args

__all__ = ["register", "run_command", "DEFAULT_PORT"]

_LOGGER = logging.getLogger(__name__)

# Cloud Run's default container port, and the one its $PORT usually says.
DEFAULT_PORT = 8080
# Cloud Run gives a stopping container 10 s after SIGTERM; finish requests in 8.
GRACEFUL_SHUTDOWN_S = 8


def _default_port() -> int:
    value = os.environ.get("PORT")
    return int(value) if value and value.isdigit() else DEFAULT_PORT


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gateway", help="the prediction + feedback HTTP API",
        description="Serve predictions from the model registry and accept feedback.")
    commands = parser.add_subparsers(dest="gateway_command", metavar="COMMAND")
    commands.required = True
    run = commands.add_parser("run", help="serve the API in the foreground",
                              description="Serve the gateway's HTTP API (OpenAPI at "
                                          "/docs and /openapi.json).")
    run.add_argument("--host", default="127.0.0.1",
                     help="interface to listen on (default 127.0.0.1; 0.0.0.0 in a "
                          "container)")
    run.add_argument("--port", type=int, default=None,
                     help=f"port (default $PORT, else {DEFAULT_PORT})")
    add_settings_flags(run, "project", "namespace", "model_root")
    run.add_argument("--token-file", metavar="FILE",
                     help="file holding the bearer token for feedback and admin routes "
                          "(default: $ROTWATCH_GATEWAY_TOKEN; neither: no auth)")
    run.add_argument("--max-body-bytes", type=int, default=None,
                     help="largest request body accepted (default 1500000)")
    run.add_argument("--no-updates", action="store_true",
                     help="do not subscribe to model-updates (defaults are still "
                          "re-read every minute)")
    run.add_argument("--access-log", action="store_true",
                     help="log every request (off by default: it costs throughput)")
    run.set_defaults(func=run_command)


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise SystemExit(f"cannot read --token-file {path}: {exc.strerror}") from None
    if not token:
        raise SystemExit(f"--token-file {path} is empty; put the token in it, or drop "
                         "the flag to run without auth")
    return token


def run_command(args: argparse.Namespace) -> int:
    import uvicorn

    from publishers.gateway import GatewayConfig, create_app

    settings = settings_from_args(args)
    try:
        config = GatewayConfig.from_env(auth_token=_read_token(args.token_file),
                                        max_body_bytes=args.max_body_bytes,
                                        listen_for_updates=False if args.no_updates
                                        else None)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    port = args.port if args.port is not None else _default_port()
    _LOGGER.info("step=gateway-run host=%s port=%d project=%s auth=%s", args.host, port,
                 settings.project, "on" if config.auth_token else "off")
    app = create_app(settings, config)
    uvicorn.run(app, host=args.host, port=port, access_log=args.access_log,
                log_level=logging.getLevelName(logging.getLogger().level).lower(),
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, log_config=None)
    return 0
