"""The whole local stack as one supervised foreground process: ``rotwatch up``.

Starts, in order: the emulators (persistent data under ``<home>/emulators``), the
topics and subscriptions (created if missing, with dead-letter policies), the gateway,
the streaming pipeline and the trainer — each as its own process, with prefixed logs.
Ctrl-C stops them all; a second ``rotwatch up`` resumes with the same data. A
component that dies is reported loudly and the stack stops.

Every role is started through its own CLI command, so this module imports no role.

    rotwatch up [--gateway-port 8080] [--home .rotwatch]
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import urllib.request

from rotwatch.config import Settings
from rotwatch.environ import scoped_environ
from rotwatch.supervisor import Component

__all__ = ["StackConfig", "components", "stack_env", "status_text"]

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StackConfig:
    home: str = ".rotwatch"
    host: str = "127.0.0.1"
    pubsub_port: int = 8085
    datastore_port: int = 8081
    gateway_port: int = 8080
    project: str = "local-project"
    pipeline_args: tuple[str, ...] = ()
    trainer_args: tuple[str, ...] = ()
    gateway_args: tuple[str, ...] = ()

    @property
    def data_dir(self) -> str:
        return os.path.join(self.home, "emulators")

    @property
    def model_root(self) -> str:
        return os.path.join(self.home, "models")

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"


def stack_env(config: StackConfig) -> dict[str, str]:
    """What every component (and an app on this machine) needs to reach the stack."""
    return {
        "PUBSUB_EMULATOR_HOST": f"{config.host}:{config.pubsub_port}",
        "DATASTORE_EMULATOR_HOST": f"{config.host}:{config.datastore_port}",
        "PUBSUB_PROJECT_ID": config.project,
        "DATASTORE_PROJECT_ID": config.project,
        "GOOGLE_CLOUD_PROJECT": config.project,
        "ROTWATCH_PROJECT": config.project,
        "ROTWATCH_HOME": config.home,
        "ROTWATCH_MODEL_ROOT": config.model_root,
    }


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except OSError:
        return False


def components(config: StackConfig) -> list[Component]:
    py = sys.executable
    cli = [py, "-m", "rotwatch.cli"]
    return [
        Component("emulators", [py, "-m", "emulators", "start", "--host", config.host,
                                "--pubsub-port", str(config.pubsub_port),
                                "--datastore-port", str(config.datastore_port),
                                "--data-dir", config.data_dir,
                                "--project", config.project],
                  ready_marker="Ctrl-C", infrastructure=True),
        Component("gateway", [*cli, "gateway", "run", "--host", config.host,
                              "--port", str(config.gateway_port), *config.gateway_args],
                  ready_check=lambda: _http_ok(f"{config.gateway_url}/healthz")),
        Component("pipeline", [*cli, "pipeline", "run", *config.pipeline_args],
                  # pipelines.feedback_pipeline logs "pipeline starting runner=..." after
                  # its preflight (subscription and topics exist), just before p.run()
                  ready_marker="pipeline starting"),
        Component("trainer", [*cli, "trainer", "run", *config.trainer_args],
                  # trainer.service logs "step=start ... outcome=listening" once subscribed
                  ready_marker="outcome=listening"),
    ]


def status_text(config: StackConfig) -> str:
    settings = Settings(project=config.project, model_root=config.model_root,
                        home=config.home)
    env = stack_env(config)
    lines = [
        "=" * 72,
        "rotwatch is up",
        f"  gateway      {config.gateway_url}   (OpenAPI: {config.gateway_url}/docs)",
        f"  Pub/Sub      {env['PUBSUB_EMULATOR_HOST']}   feedback topic: "
        f"{settings.topic('feedback')}",
        f"  Datastore    {env['DATASTORE_EMULATOR_HOST']}   data: {config.data_dir}",
        f"  models       {config.model_root}",
        "  apps on this machine can publish with the official client after:",
        *[f"    export {k}={v}" for k, v in env.items() if not k.startswith("ROTWATCH_")],
        "  Ctrl-C stops everything; `rotwatch up` again resumes with the same data.",
        "=" * 72,
    ]
    return "\n".join(lines)


def start_stack(config: StackConfig, out=None, on_line=None):
    """Start every component in order; returns the running :class:`Supervisor`.

    On a failure to start, what was started is stopped and the error re-raised.
    """
    from rotwatch.resources import ensure_pubsub_resources
    from rotwatch.supervisor import Supervisor

    env = dict(os.environ)
    # A user's real credentials must not mix with the emulators (the clients refuse
    # explicit credentials plus an emulator host).
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    env.update(stack_env(config))
    supervisor = Supervisor(out=out, env=env, on_line=on_line)
    specs = components(config)
    try:
        supervisor.start(specs[0])
        with scoped_environ(stack_env(config)):
            ensure_pubsub_resources(Settings(project=config.project))
        for spec in specs[1:]:
            supervisor.start(spec)
    except BaseException:
        supervisor.stop()
        raise
    return supervisor
