"""The Google Cloud launch path (docs/cloud.md), checked offline.

1. Each container's entry point — the exact argv of its Dockerfile's ENTRYPOINT/CMD,
   run from the files ``pip install .`` installs — starts against the emulators with
   the settings a deployment passes (``ROTWATCH_PROJECT``, ``PORT``, ...), gets ready
   (gateway: ``/healthz`` on ``$PORT``; trainer: logs that it is listening) and exits
   cleanly on SIGTERM within Cloud Run's 10 s grace period.
2. The Dockerfiles bake in no credentials, project ids, buckets or emulator hosts, use
   ``python:3.11-slim`` and ``pip install .``, run as a non-root user, and use
   exec-form entry points (so the process itself gets SIGTERM).
3. ``index.yaml`` covers every Datastore query the code runs — recorded by running
   them against the emulator — and holds no index nothing uses.
4. docs/cloud.md's topic and subscription commands match ``rotwatch.resources.PLAN``,
   and its configuration reference names every ``ROTWATCH_*`` variable the code reads.

    .venv/bin/python -m pytest tests/test_cloud_path.py
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = {"gateway": REPO / "Dockerfile.gateway", "trainer": REPO / "Dockerfile.trainer"}
DOCS = REPO / "docs" / "cloud.md"
# Folders holding the product's code (DESIGN.md "Layout"); tests/ and bench/ are not.
PRODUCT_DIRS = ("rotwatch", "publishers", "pipelines", "trainer", "emulators")

# The project and namespace a "deployment" in these tests uses: not the emulators'
# default, so the containers are seen to take them from the environment, and nothing
# here mixes with other tests' topics or entities.
DEPLOY_PROJECT = "cloud-path-test"
DEPLOY_NAMESPACE = "cloud-path"
# A cold start imports Beam, gRPC and scikit-learn (~5 s); a busy 2-core machine
# running other suites can triple that.
READY_TIMEOUT_S = 90.0
# Cloud Run sends SIGKILL 10 s after SIGTERM; a clean stop must fit inside.
CLOUD_RUN_GRACE_S = 10.0
# What the trainer logs once its streaming pull is open (trainer/service.py).
TRAINER_READY = re.compile(r"step=start .*outcome=listening")


# -- Dockerfiles -----------------------------------------------------------------------
def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        instruction, _, rest = text.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out


def final_stage(instructions):
    starts = [i for i, (name, _) in enumerate(instructions) if name == "FROM"]
    assert starts, "a Dockerfile needs a FROM"
    return instructions[starts[-1]:]


def command_words(name: str, rest: str) -> list[str]:
    """The words of an ENTRYPOINT/CMD: exec form, or shell form that ``exec``s.

    Shell form runs ``/bin/sh -c``; without ``exec`` the shell stays PID 1 and does not
    pass SIGTERM on, so Cloud Run's stop signal never reaches rotwatch. With ``exec``
    the shell replaces itself (and can expand ``${PORT}`` first).
    """
    try:
        value = json.loads(rest)
    except ValueError:
        value = None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    words = shlex.split(rest)
    assert words[:1] == ["exec"], (
        f"{name} {rest}: shell form without `exec` keeps /bin/sh as PID 1, which does "
        f'not pass SIGTERM on; write {name} ["rotwatch", ...] or {name} exec rotwatch ...')
    return words[1:]


def container_argv(path: Path) -> list[str]:
    """The command Docker starts: ENTRYPOINT + CMD of the final stage.

    Setting ENTRYPOINT resets a CMD inherited from the base image, as Docker does.
    ``$VAR`` / ``${VAR}`` in a shell-form command are left for :func:`expand`.
    """
    entrypoint, cmd = None, None
    for name, rest in final_stage(dockerfile_instructions(path)):
        if name == "ENTRYPOINT":
            entrypoint, cmd = command_words(name, rest), None
        elif name == "CMD":
            cmd = command_words(name, rest)
    argv = (entrypoint or []) + (cmd or [])
    assert argv, f"{path.name} has neither ENTRYPOINT nor CMD"
    return argv


def expand(argv: list[str], env: dict[str, str]) -> list[str]:
    """What the shell of a shell-form command makes of ``$VAR`` and ``${VAR}``."""
    return [re.sub(r"\$\{(\w+)\}|\$(\w+)",
                   lambda m: env.get(m.group(1) or m.group(2), ""), word)
            for word in argv]


def container_env(path: Path) -> dict[str, str]:
    """The ENV of the final stage (``ENV A=1 B=2`` and the legacy ``ENV A 1``)."""
    env = {}
    for name, rest in final_stage(dockerfile_instructions(path)):
        if name != "ENV":
            continue
        words = shlex.split(rest)
        if words and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def dockerfile(role: str) -> Path:
    path = DOCKERFILES[role]
    if not path.exists():
        pytest.fail(f"{path.name} is missing: the {role} has no container for Cloud Run "
                    "(docs/cloud.md deploys it)")
    return path


# -- the product as `pip install .` installs it -----------------------------------------
def _distribution():
    """setup.py's Distribution (packages, entry points), without building anything."""
    from distutils.core import run_setup
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        return run_setup("setup.py", stop_after="init")
    finally:
        os.chdir(cwd)


def test_setup_py_installs_every_product_package():
    """`pip install .` (the Dockerfiles) and Dataflow's --setup_file sdist install only
    the packages setup.py lists; a subpackage left out is missing in the cloud only."""
    listed = set(_distribution().packages)
    on_disk = {".".join(init.parent.relative_to(REPO).parts)
               for top in PRODUCT_DIRS for init in (REPO / top).rglob("__init__.py")
               if "__pycache__" not in init.parts}
    missing = sorted(on_disk - listed)
    assert not missing, (
        f"setup.py's packages= leaves out {missing}: an installed rotwatch (the "
        "containers, Dataflow workers) fails with ModuleNotFoundError while the editable "
        "dev install works. Fix: packages=find_packages(include=[" +
        ", ".join(f'"{top}", "{top}.*"' for top in PRODUCT_DIRS) + "])")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The modules `pip install .` puts in site-packages, built from a copy of the tree
    (setup.py's build_py: the same package list a wheel is made from)."""
    context = tmp_path_factory.mktemp("build-context")
    shutil.copy(REPO / "setup.py", context)
    for top in PRODUCT_DIRS:
        shutil.copytree(REPO / top, context / top,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    site = tmp_path_factory.mktemp("site-packages")
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib",
                             str(site)], cwd=context, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def console_script(name: str = "rotwatch") -> str:
    """``module:function`` of a console script from setup.py's entry points."""
    for spec in _distribution().entry_points["console_scripts"]:
        script, _, target = (part.strip() for part in spec.partition("="))
        if script == name:
            return target
    raise AssertionError(f"setup.py has no console script {name!r}")


def launcher(installed: Path, argv: list[str]) -> list[str]:
    """The container's argv, run with the installed files instead of the repo.

    ``-S`` skips site-packages' .pth files: the dev venv's editable finder would
    otherwise serve anything the installed copy lacks. The dependencies come from the
    venv's site-packages on PYTHONPATH (see :func:`deployment_env`).
    """
    assert argv[0] == "rotwatch", (
        f"the entry point runs {argv[0]!r}: the image's `pip install .` provides the "
        "`rotwatch` console script; start it with that")
    module, _, function = console_script().partition(":")
    code = f"import sys; from {module} import {function} as f; sys.exit(f())"
    return [sys.executable, "-S", "-c", code, *argv[1:]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deployment_env(path: Path, installed: Path, home: Path, port: int) -> dict[str, str]:
    """What the runtime gives the container: its ENV, Cloud Run's PORT, the settings
    from `gcloud run deploy --set-env-vars`, and (here) the emulators' hosts."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ROTWATCH_") and k not in ("GOOGLE_APPLICATION_CREDENTIALS",
                                                           "PYTHONPATH", "PORT")}
    assert env.get("PUBSUB_EMULATOR_HOST") and env.get("DATASTORE_EMULATOR_HOST")
    env.update({k: v for k, v in container_env(path).items() if k != "PATH"})
    env.update({
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(
            [str(installed), sysconfig.get_paths()["purelib"],
             sysconfig.get_paths()["platlib"]])),
        "PORT": str(port),
        "ROTWATCH_PROJECT": DEPLOY_PROJECT,
        "ROTWATCH_NAMESPACE": DEPLOY_NAMESPACE,
        "ROTWATCH_MODEL_ROOT": str(home / "models"),
        "PYTHONUNBUFFERED": "1",
    })
    return env


class OutputReader:
    """Collects a child's combined output in a thread; waits for a pattern."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc) -> None:
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def seen(self, pattern: re.Pattern) -> bool:
        with self._cond:
            return any(pattern.search(line) for line in self.lines)

    def text(self) -> str:
        self._thread.join(timeout=5)
        with self._cond:
            return "\n".join(self.lines)


def _healthz_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _wait_ready(role: str, proc, output: OutputReader, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`rotwatch {role} run` exited with {proc.returncode} before it "
                        f"was ready:\n{output.text()[-4000:]}")
        if role == "gateway" and _healthz_ok(port):
            return
        if role == "trainer" and output.seen(TRAINER_READY):
            return
        time.sleep(0.25)
    pytest.fail(f"`rotwatch {role} run` was not ready after {READY_TIMEOUT_S:.0f} s:\n"
                f"{output.text()[-4000:]}")


def _gateway_subscriptions() -> list[str]:
    from google.cloud import pubsub_v1
    with pubsub_v1.SubscriberClient() as subscriber:
        return [s.name for s in subscriber.list_subscriptions(
            request={"project": f"projects/{DEPLOY_PROJECT}"})
            if "/model-updates-gateway-" in s.name]


@pytest.mark.slow
@pytest.mark.parametrize("role", ["gateway", "trainer"])
def test_container_entry_point_starts_and_stops_on_sigterm(role, emulators, installed,
                                                           tmp_path):
    path = dockerfile(role)
    argv = container_argv(path)
    assert argv[:3] == ["rotwatch", role, "run"], (
        f"{path.name} starts {argv}; it should start `rotwatch {role} run`")
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = deployment_env(path, installed, home, port)

    setup = subprocess.run(launcher(installed, ["rotwatch", "setup"]), env=env, cwd=home,
                           capture_output=True, text=True, timeout=READY_TIMEOUT_S)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert f"projects/{DEPLOY_PROJECT}/subscriptions/model-rot-trainer" in setup.stdout

    proc = subprocess.Popen(launcher(installed, expand(argv, env)), env=env, cwd=home,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output = OutputReader(proc)
    try:
        _wait_ready(role, proc, output, port)
        if role == "gateway":
            assert _gateway_subscriptions(), "a running gateway listens on model-updates"
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=CLOUD_RUN_GRACE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`rotwatch {role} run` was still running {CLOUD_RUN_GRACE_S:.0f} "
                        f"s after SIGTERM; Cloud Run would kill it:\n"
                        f"{output.text()[-4000:]}")
        stopped_in = time.monotonic() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.text()
    # uvicorn re-raises the signal once its shutdown is complete, so a gateway that
    # stopped cleanly ends "killed by SIGTERM"; anything else is a crash.
    assert code in (0, -signal.SIGTERM), f"exit code {code} after SIGTERM:\n{text[-4000:]}"
    assert "Traceback" not in text, text[-4000:]
    assert stopped_in < CLOUD_RUN_GRACE_S
    if role == "gateway":
        assert f"project={DEPLOY_PROJECT}" in text, "the project comes from the env"
        assert _gateway_subscriptions() == [], (
            "the gateway left its per-process model-updates subscription behind")


# -- Dockerfile hygiene ----------------------------------------------------------------
_SECRET_WORDS = re.compile(r"(GOOGLE_APPLICATION_CREDENTIALS|PRIVATE.?KEY|BEGIN [A-Z ]*KEY"
                           r"|gcloud\s+auth|SECRET|PASSWORD|TOKEN=|service.?account.*\.json"
                           r"|\.p12\b|\.pem\b)", re.IGNORECASE)
# Settings that must come from the deployment, never from the image.
_DEPLOYMENT_VARS = ("ROTWATCH_PROJECT", "GOOGLE_CLOUD_PROJECT", "ROTWATCH_MODEL_ROOT",
                    "ROTWATCH_NAMESPACE", "ROTWATCH_REGION", "ROTWATCH_GATEWAY_TOKEN",
                    "PUBSUB_EMULATOR_HOST", "DATASTORE_EMULATOR_HOST", "PUBSUB_PROJECT_ID",
                    "DATASTORE_PROJECT_ID", "CLOUDSDK_CORE_PROJECT")


@pytest.mark.parametrize("role", ["gateway", "trainer"])
def test_dockerfile_bakes_in_no_credentials_projects_or_buckets(role):
    path = dockerfile(role)
    instructions = dockerfile_instructions(path)
    for name, rest in instructions:
        text = f"{name} {rest}"
        assert not _SECRET_WORDS.search(text), f"{path.name}: credential-like: {text}"
        assert "gs://" not in rest and "projects/" not in rest, (
            f"{path.name}: a bucket or project is baked in: {text}")
        if name in ("ENV", "ARG"):
            for var in _DEPLOYMENT_VARS:
                assert not re.search(rf"(^|\s){var}(=|\s|$)", rest), (
                    f"{path.name} sets {var}; it must come from the deployment "
                    f"(--set-env-vars), see docs/cloud.md: {text}")
        if name in ("COPY", "ADD"):
            assert not re.search(r"\.json\b|credentials|\.config/gcloud", rest), (
                f"{path.name} copies what looks like a credential: {text}")


@pytest.mark.parametrize("role", ["gateway", "trainer"])
def test_dockerfile_installs_the_project_and_runs_as_non_root(role):
    path = dockerfile(role)
    instructions = dockerfile_instructions(path)
    bases = [rest.split()[0] for name, rest in instructions if name == "FROM"]
    stage_names = {rest.split()[-1] for name, rest in instructions
                   if name == "FROM" and " as " in rest.lower()}
    assert all(b == "python:3.11-slim" or b in stage_names for b in bases), bases
    runs = " ; ".join(rest for name, rest in instructions if name == "RUN")
    assert re.search(r"pip install (--?[\w-]+(=\S+)? )*\.(\s|$|\[)", runs), (
        f"{path.name} should install the project with `pip install .`: {runs}")
    users = [rest.split(":")[0] for name, rest in final_stage(instructions)
             if name == "USER"]
    assert users and users[-1] not in ("root", "0"), (
        f"{path.name}'s final stage must switch to a non-root USER (it has {users})")
    names = [name for name, _ in final_stage(instructions)]
    last_user = max(i for i, n in enumerate(names) if n == "USER")
    assert all(i > last_user for i, n in enumerate(names) if n in ("ENTRYPOINT", "CMD")), (
        f"{path.name}: the entry point must come after USER")
    container_argv(path)  # PID 1 is rotwatch, or a message saying why it must be


def test_dockerignore_keeps_local_state_and_secrets_out():
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".git", ".venv", ".rotwatch", ".env", "**/*credentials*.json"):
        assert needed in patterns, f".dockerignore should exclude {needed}"


# -- index.yaml against the queries the code runs --------------------------------------
_EQUALITY = {"=", "==", "IN", "in"}


def needed_index(kind, ancestor: bool, filters, orders):
    """The composite index a query needs in Cloud Datastore, or None (built-in).

    Built-in indexes serve: kind-only and ancestor-only queries; equality filters only
    (with or without an ancestor); filters and sorts on one property only. Anything
    else needs the equality properties, then the inequality property, then the sort
    orders — with an ancestor flag when the query has one.
    """
    orders = [o for o in orders if o.lstrip("-") != "__key__"]
    eq = [p for p, op in filters if op in _EQUALITY and p != "__key__"]
    ineq = [p for p, op in filters if op not in _EQUALITY and p != "__key__"]
    props = set(eq) | set(ineq) | {o.lstrip("-") for o in orders}
    if not ineq and not orders:
        return None
    if not ancestor and len(props) == 1:
        return None
    assert len(set(ineq)) <= 1, f"{kind}: inequality filters on {set(ineq)}"
    sort = [(o.lstrip("-"), "desc" if o.startswith("-") else "asc") for o in orders]
    if ineq and (not sort or sort[0][0] != ineq[0]):
        sort.insert(0, (ineq[0], "asc"))
    sort_props = {p for p, _ in sort}
    return {"kind": kind, "ancestor": ancestor,
            "equality": frozenset(p for p in eq if p not in sort_props),
            "sort": tuple(sort)}


def index_serves(index: dict, need: dict) -> bool:
    props = [(p["name"], p.get("direction", "asc")) for p in index["properties"]]
    n_eq = len(need["equality"])
    return (index["kind"] == need["kind"]
            and (index.get("ancestor", "no") == "yes") == need["ancestor"]
            and {p for p, _ in props[:n_eq]} == need["equality"]
            and tuple(props[n_eq:]) == need["sort"])


def test_needed_index_rules():
    assert needed_index("K", False, [("a", "="), ("b", "=")], []) is None
    assert needed_index("K", True, [("a", "=")], []) is None
    assert needed_index("K", False, [("t", ">")], ["-t"]) is None
    assert needed_index("K", True, [], []) is None
    need = needed_index("K", False, [("m", "="), ("t", ">=")], [])
    assert need == {"kind": "K", "ancestor": False, "equality": frozenset({"m"}),
                    "sort": (("t", "asc"),)}
    need = needed_index("K", False, [("m", "=")], ["-t"])
    assert need["sort"] == (("t", "desc"),)
    assert needed_index("K", True, [], ["n"])["ancestor"] is True
    index = {"kind": "K", "properties": [{"name": "m"}, {"name": "t", "direction": "desc"}]}
    assert index_serves(index, need)
    assert not index_serves(index, needed_index("K", False, [("m", "="), ("t", "<")], []))


# Where the product builds Datastore queries, per file. A new query needs a line in
# `_run_every_query` (so its index is checked) and, if it needs one, an index.
QUERY_SITES = {
    "rotwatch/demo.py": 2,
    "rotwatch/report.py": 7,
    "rotwatch/registry.py": 5,
    "trainer/dataset.py": 2,
    "trainer/jobs.py": 2,
    "trainer/beam_dataset.py": 1,
    "pipelines/publish.py": 1,
    "pipelines/batch_metrics.py": 1,
}
_QUERY_SITE = re.compile(r"(\.query\(\s*kind=|\bQuery\(\s*kind=)")


def test_every_query_site_is_exercised_below():
    found = {}
    for top in ("rotwatch", "publishers", "pipelines", "trainer"):
        for path in sorted((REPO / top).rglob("*.py")):
            count = len(_QUERY_SITE.findall(path.read_text(encoding="utf-8")))
            if count:
                found[str(path.relative_to(REPO))] = count
    assert found == QUERY_SITES, (
        f"Datastore query sites changed: {found} (expected {QUERY_SITES}). Run the new "
        "query in _run_every_query in tests/test_cloud_path.py, then add the index it "
        "needs to index.yaml (`gcloud datastore indexes create index.yaml`).")


def _seed(client, now):
    from google.cloud import datastore
    from rotwatch import kinds
    model = datastore.Entity(client.key(kinds.MODEL, "zombies"))
    model.update({"default_version": "v1", "created_at": now, "updated_at": now})
    client.put(model)
    for i in range(2):
        row = datastore.Entity(client.key(kinds.FEEDBACK, f"e{i}"),
                               exclude_from_indexes=("features",))
        row.update({"model": "zombies", "version": "v1", "features": [0.1, 0.2, 0.3, 0.4],
                    "prediction": 1, "was_correct": True, "label": None, "correct": True,
                    "event_time": now - dt.timedelta(seconds=10 - i), "stored_at": now})
        client.put(row)


def _run_every_query(client, settings, now, monkeypatch) -> list[dict]:
    """Run each query the product makes against the emulator; return what was asked."""
    import apache_beam as beam
    from google.cloud.datastore import query as query_module

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines import batch_metrics
    from pipelines.publish import already_published
    from pipelines.versions import StaticCatalog
    from rotwatch.events import format_time
    from rotwatch import demo
    from rotwatch.events import RotEvent
    from rotwatch.registry import Registry
    from rotwatch.report import load_report
    from trainer import beam_dataset
    from trainer.dataset import count_feedback, read_feedback
    from trainer.jobs import JobStore

    asked = []
    fetch = query_module.Query.fetch

    def recording_fetch(self, *args, **kwargs):
        filters = []
        for f in self.filters:
            if isinstance(f, tuple):
                filters.append((f[0], f[1]))
            else:
                assert hasattr(f, "property_name"), f"composite filter {f!r}: extend me"
                filters.append((f.property_name, f.operator))
        asked.append({"kind": self.kind, "ancestor": self.ancestor is not None,
                      "filters": filters, "orders": list(self.order)})
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(query_module.Query, "fetch", recording_fetch)

    since, until = now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)
    load_report("zombies", since=since, until=until, settings=settings, client=client)
    load_report("zombies", settings=settings, client=client)
    demo._read_feedback(client, "zombies")
    demo._count_feedback(client, "zombies")
    registry = Registry(settings, client=client, publish=False)
    registry.list_models()
    registry.list_versions("zombies")
    registry.find_versions("zombies", "rot:x")
    registry.history("zombies")
    registry._latest_number("zombies")
    read_feedback(client, "zombies", now - dt.timedelta(seconds=9.5), older_share=1.0)
    count_feedback(client, "zombies", since, limit=10)
    jobs = JobStore(client)
    jobs.due(60.0)
    jobs.list("zombies")
    jobs.list()
    already_published(client, RotEvent(model="zombies", version="v1", kind="accuracy",
                                       decided_at=now), 3600)

    # The Beam reads (trainer dataset, batch metrics): record ReadFromDatastore's
    # query while building the graph; nothing runs.
    def recording_read(query, *_, **__):
        asked.append({"kind": query.kind, "ancestor": query.ancestor is not None,
                      "filters": [(p, op) for p, op, _ in (query.filters or ())],
                      "orders": list(query.order or ())})
        return beam.Create([])

    monkeypatch.setattr(beam_dataset, "ReadFromDatastore", recording_read)
    monkeypatch.setattr(batch_metrics, "ReadFromDatastore", recording_read)
    _ = beam.Pipeline() | beam_dataset.ReadFeedbackRows(settings.project,
                                                        settings.namespace, "zombies", since)
    options = PipelineOptions(["--project", settings.project, "--start",
                               format_time(since), "--end", format_time(until)])
    batch_metrics.build_batch(beam.Pipeline(), options, catalog=StaticCatalog())
    return asked


@pytest.mark.slow
def test_index_yaml_covers_every_query_and_nothing_more(emulators, monkeypatch):
    from google.cloud import datastore

    from rotwatch.config import Settings
    from rotwatch.report import REQUIRED_INDEXES

    config = yaml.safe_load((REPO / "index.yaml").read_text())
    indexes = config["indexes"]
    for index in indexes:
        assert set(index) <= {"kind", "ancestor", "properties"}, index
        assert index.get("ancestor", "no") in ("yes", "no"), index
        assert len(index["properties"]) >= 2, f"a one-property index is built in: {index}"
        for prop in index["properties"]:
            assert set(prop) <= {"name", "direction"}, prop
            assert prop.get("direction", "asc") in ("asc", "desc"), prop

    settings = Settings(project="local-project", namespace="cloud-path-indexes")
    client = datastore.Client(project=settings.project, namespace=settings.namespace)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    _seed(client, now)
    asked = _run_every_query(client, settings, now, monkeypatch)

    needs = [n for q in asked if (n := needed_index(**q)) is not None]
    assert len(asked) >= sum(QUERY_SITES.values())
    uncovered = [n for n in needs if not any(index_serves(i, n) for i in indexes)]
    assert not uncovered, f"index.yaml has no index for these queries: {uncovered}"
    unused = [i for i in indexes if not any(index_serves(i, n) for n in needs)]
    assert not unused, f"index.yaml holds indexes no query uses (each costs writes): {unused}"
    for index in yaml.safe_load(REQUIRED_INDEXES)["indexes"]:
        assert index in indexes, f"rotwatch.report.REQUIRED_INDEXES needs {index}"


# -- docs/cloud.md against rotwatch.resources ------------------------------------------
def shell_commands(markdown: str) -> list[list[str]]:
    """Every command in the ```sh blocks, continuation lines joined, as argv."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, flags=re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(command, comments=True)
            if argv:
                commands.append(argv)
    return commands


def parse_flags(words: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    positional, flags = [], {}
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            if eq:
                flags[name] = value
            elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                flags[name] = words[i + 1]
                i += 1
            else:
                flags[name] = True
        else:
            positional.append(word)
        i += 1
    return positional, flags


_DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> int:
    match = re.fullmatch(r"(\d+)([smhd])", text)
    assert match, f"duration {text!r}"
    return int(match.group(1)) * _DURATION_S[match.group(2)]


def test_docs_topic_and_subscription_commands_match_the_plan():
    from rotwatch.config import SUBSCRIPTIONS, TOPICS
    from rotwatch.resources import DEADLETTER_RETENTION_S, PLAN

    commands = shell_commands(DOCS.read_text(encoding="utf-8"))
    topics, subscriptions = [], {}
    for argv in commands:
        if argv[:4] == ["gcloud", "pubsub", "topics", "create"]:
            topics += parse_flags(argv[4:])[0]
        elif argv[:4] == ["gcloud", "pubsub", "subscriptions", "create"]:
            positional, flags = parse_flags(argv[4:])
            assert len(positional) == 1, argv
            assert positional[0] not in subscriptions, f"created twice: {positional[0]}"
            subscriptions[positional[0]] = flags
    assert sorted(topics) == sorted(TOPICS.values())
    assert sorted(subscriptions) == sorted(SUBSCRIPTIONS[role] for role, *_ in PLAN)
    for sub_role, topic_role, dead_role, attempts, ack_deadline in PLAN:
        flags = dict(subscriptions[SUBSCRIPTIONS[sub_role]])
        assert flags.pop("topic") == TOPICS[topic_role]
        assert int(flags.pop("ack-deadline")) == ack_deadline
        if dead_role:
            assert flags.pop("dead-letter-topic") == TOPICS[dead_role]
            assert int(flags.pop("max-delivery-attempts")) == attempts
        else:
            assert duration_s(flags.pop("message-retention-duration")) == \
                DEADLETTER_RETENTION_S
        assert not flags, f"{SUBSCRIPTIONS[sub_role]}: flags not in PLAN: {flags}"
    assert any(argv[-3:] == ["setup", "--project", "$PROJECT"] for argv in commands), (
        "the docs should offer `rotwatch setup --project $PROJECT`")


def test_docs_deploy_what_exists_and_reference_every_setting():
    text = DOCS.read_text(encoding="utf-8")
    commands = shell_commands(text)
    assert ["gcloud", "datastore", "indexes", "create", "index.yaml", "--project",
            "$PROJECT"] in commands
    built = {argv[argv.index("-f") + 1] for argv in commands
             if argv[:2] == ["docker", "build"] and "-f" in argv}
    assert built == {p.name for p in DOCKERFILES.values()}
    assert any(argv[:1] == ["make"] and "run-dataflow" in argv for argv in commands)
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    target = re.search(r"^run-dataflow:.*?(?=^\S|\Z)", makefile, flags=re.M | re.S)
    assert target, "docs/cloud.md runs `make run-dataflow`: the Makefile needs that target"
    for var in ("PROJECT", "REGION", "TEMP_LOCATION"):
        assert f"$({var})" in target.group(0), f"make run-dataflow should pass {var}"
    # every ROTWATCH_* variable the product reads is in the configuration reference
    reference = text.split("## Configuration reference", 1)[1]
    read = set()
    for top in PRODUCT_DIRS:
        for path in (REPO / top).rglob("*.py"):
            read |= set(re.findall(r"\bROTWATCH_[A-Z_]+[A-Z]\b", path.read_text("utf-8")))
    missing = sorted(v for v in read if f"`{v}`" not in reference)
    assert not missing, f"docs/cloud.md's configuration reference lacks {missing}"
    # the trainer and gateway deploys pass settings by environment, never baked in
    deploys = {}
    for argv in commands:
        if argv[:3] == ["gcloud", "run", "deploy"]:
            deploys.setdefault(argv[3], []).append(parse_flags(argv[4:])[1])
        elif argv[:5] == ["gcloud", "beta", "run", "worker-pools", "deploy"]:
            deploys.setdefault(argv[5], []).append(parse_flags(argv[6:])[1])
    assert sorted(deploys) == ["rotwatch-gateway", "rotwatch-trainer"]
    for name, variants in deploys.items():
        for flags in variants:
            assert "ROTWATCH_PROJECT=$PROJECT" in flags["set-env-vars"], (name, flags)
            assert "ROTWATCH_MODEL_ROOT=$MODEL_ROOT" in flags["set-env-vars"], (name, flags)
            assert flags["service-account"].startswith("$"), (name, flags)
            assert flags["image"].startswith("$IMAGES/"), (name, flags)
    # a streaming-pull worker deployed as a service must keep its CPU and an instance
    service = [f for f in deploys["rotwatch-trainer"] if "min-instances" in f]
    assert all(f.get("no-cpu-throttling") is True and f["min-instances"] == "1"
               for f in service)
