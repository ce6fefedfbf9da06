"""The supervisor behind `rotwatch up`: prefixed logs, loud failure, clean stop."""
import io
import sys
import threading
import time

import pytest

from rotwatch.supervisor import Component, ComponentFailed, Supervisor

PY = sys.executable


def _sleeper(name, ready="ready", extra=""):
    code = "\n".join(["import time, sys", extra, f"print('hello from {name}')",
                      f"print('{ready}', flush=True)", "time.sleep(60)"])
    return Component(name, [PY, "-c", code], ready_marker=ready)


def test_logs_are_prefixed_and_stop_is_clean():
    out = io.StringIO()
    sup = Supervisor(out=out)
    sup.start(_sleeper("alpha"))
    sup.start(_sleeper("beta"))
    procs = [r.proc for r in sup._running]
    started = time.monotonic()
    sup.stop(grace=5)
    assert time.monotonic() - started < 5
    assert all(p.returncode is not None for p in procs)
    text = out.getvalue()
    assert "[alpha    ] hello from alpha" in text
    assert "[beta     ] hello from beta" in text


def test_a_component_that_dies_is_reported_and_watch_returns():
    out = io.StringIO()
    sup = Supervisor(out=out)
    sup.start(_sleeper("steady"))
    sup.start(Component("crashy", [PY, "-c", "print('up', flush=True); import time; "
                                    "time.sleep(0.5); raise SystemExit(3)"],
                        ready_marker="up"))
    failure = sup.watch(threading.Event(), poll_s=0.1)
    sup.stop(grace=5)
    assert failure == "crashy exited unexpectedly with code 3"
    assert "!! crashy exited unexpectedly with code 3; stopping the stack." in out.getvalue()


def test_a_component_that_exits_before_ready_raises_with_its_last_lines():
    sup = Supervisor(out=io.StringIO())
    with pytest.raises(ComponentFailed, match=r"(?s)broken exited with code 1.*bad config"):
        sup.start(Component("broken", [PY, "-c", "import sys; print('bad config'); "
                                       "sys.exit(1)"], ready_marker="never"))
    sup.stop()


def test_a_component_ignoring_sigterm_is_killed_after_the_grace():
    sup = Supervisor(out=io.StringIO())
    sup.start(_sleeper("stubborn", extra="import signal; signal.signal(signal.SIGTERM, "
                                         "signal.SIG_IGN)"))
    proc = sup._running[0].proc
    sup.stop(grace=1)
    assert proc.returncode == -9


def test_infrastructure_stops_after_the_services():
    """Services shut down while the emulators still answer; then the emulators stop."""
    import os
    import tempfile
    log = os.path.join(tempfile.mkdtemp(), "order.log")
    record = ("import signal, sys, time\n"
              "def bye(*_):\n"
              "    time.sleep({delay})\n"
              "    open({log!r}, 'a').write('{name}\\n')\n"
              "    sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, bye)\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    sup = Supervisor(out=io.StringIO())
    sup.start(Component("infra", [PY, "-c", record.format(delay=0, log=log, name="infra")],
                        ready_marker="ready", infrastructure=True))
    sup.start(Component("svc", [PY, "-c", record.format(delay=0.5, log=log, name="svc")],
                        ready_marker="ready"))
    sup.stop(grace=5)
    assert open(log).read().split() == ["svc", "infra"]
