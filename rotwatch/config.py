"""Where rotwatch runs: project, topics, subscriptions, model root — from flags or env.

Nothing here names a real project, bucket or credential. Defaults serve the embedded
local stack (project ``local-project``, data under ``.rotwatch/``); the same settings
point every role at Google Cloud when given through flags or these variables:

=========================  ==============================================  ==================
variable                   meaning                                         default
=========================  ==============================================  ==================
``ROTWATCH_PROJECT``       Google Cloud project (falls back to             ``local-project``
                           ``GOOGLE_CLOUD_PROJECT``)
``ROTWATCH_REGION``        Dataflow / Cloud Run region                     unset
``ROTWATCH_MODEL_ROOT``    where model artifacts live (``gs://b/p`` too)   ``.rotwatch/models``
``ROTWATCH_NAMESPACE``     Datastore namespace for every kind              default namespace
``ROTWATCH_HOME``          local data folder                               ``.rotwatch``
=========================  ==============================================  ==================
"""
from __future__ import annotations

import dataclasses
import os
import re

__all__ = ["Settings", "TOPICS", "SUBSCRIPTIONS", "DEFAULT_PROJECT", "add_settings_flags",
           "settings_from_args"]

DEFAULT_PROJECT = "local-project"
DEFAULT_HOME = ".rotwatch"

# Topic ids (DESIGN.md "Topics"); full names are built per project.
TOPICS = {
    "feedback": "feedback",
    "deadletter": "feedback-deadletter",
    "rot": "model-rot",
    "updates": "model-updates",
    # where the trainer's subscription sends rot events it failed to handle
    "rot-deadletter": "model-rot-deadletter",
}
# Subscription ids owned by each role. The gateway makes one per process for
# model-updates (each replica must see every change), so it is not listed here.
SUBSCRIPTIONS = {
    "pipeline": "feedback-pipeline",
    "trainer": "model-rot-trainer",
    # Pub/Sub keeps a message only for subscriptions that exist when it is published:
    # these hold dead letters until a person reads them (`rotwatch deadletter show`).
    "deadletter": "feedback-deadletter-inspect",
    "rot-deadletter": "model-rot-deadletter-inspect",
}

# Google's rule for project ids, which Beam also enforces (`test` is too short).
_PROJECT_RE = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved configuration shared by every role."""

    project: str = DEFAULT_PROJECT
    region: str | None = None
    model_root: str = os.path.join(DEFAULT_HOME, "models")
    namespace: str | None = None
    home: str = DEFAULT_HOME

    def __post_init__(self):
        if not _PROJECT_RE.match(self.project or ""):
            raise ValueError(
                f"project id {self.project!r} is not a valid Google Cloud project id "
                "(6-30 lowercase letters, digits or hyphens, starting with a letter); "
                "set --project or ROTWATCH_PROJECT, e.g. local-project")
        if not self.model_root:
            raise ValueError("model_root is empty: set --model-root or ROTWATCH_MODEL_ROOT")

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Settings":
        """Settings from the environment, with non-None ``overrides`` (flags) winning."""
        env = os.environ if environ is None else environ
        home = env.get("ROTWATCH_HOME") or DEFAULT_HOME
        values = {
            "project": env.get("ROTWATCH_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT")
            or DEFAULT_PROJECT,
            "region": env.get("ROTWATCH_REGION") or None,
            "model_root": env.get("ROTWATCH_MODEL_ROOT") or os.path.join(home, "models"),
            "namespace": env.get("ROTWATCH_NAMESPACE") or None,
            "home": home,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    # -- resource names ---------------------------------------------------------------
    def topic(self, role: str) -> str:
        """``projects/<p>/topics/<t>`` for a role in :data:`TOPICS`."""
        return f"projects/{self.project}/topics/{TOPICS[role]}"

    def subscription(self, role: str) -> str:
        return f"projects/{self.project}/subscriptions/{SUBSCRIPTIONS[role]}"

    @property
    def uses_emulators(self) -> bool:
        return bool(os.environ.get("PUBSUB_EMULATOR_HOST")
                    or os.environ.get("DATASTORE_EMULATOR_HOST"))


# The flags every command that reaches the project shares, and their help.
_FLAG_HELP = {
    "project": "Google Cloud project (default: ROTWATCH_PROJECT, GOOGLE_CLOUD_PROJECT, "
               "or local-project)",
    "namespace": "Datastore namespace (default: ROTWATCH_NAMESPACE, else none)",
    "model_root": "where model artifacts live: a folder or gs://bucket/prefix (default: "
                  "ROTWATCH_MODEL_ROOT, else .rotwatch/models)",
}


def add_settings_flags(parser, *names: str) -> None:
    """Add ``--project`` / ``--namespace`` / ``--model-root`` (those named, default
    all) to an argparse parser; :func:`settings_from_args` reads them back."""
    for name in names or tuple(_FLAG_HELP):
        parser.add_argument("--" + name.replace("_", "-"), dest=name,
                            help=_FLAG_HELP[name])


def settings_from_args(args) -> "Settings":
    """:meth:`Settings.from_env` with the settings flags a command was given winning."""
    return Settings.from_env(**{name: getattr(args, name, None) for name in _FLAG_HELP})
