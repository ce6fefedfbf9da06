"""Run a gateway in a background thread (tests, benchmarks, demos) and register the
article's zombie models.

>>> with ServerThread(create_app(settings)) as server:     # doctest: +SKIP
...     requests.post(server.url + "/v1/predict", json=...)
"""
from __future__ import annotations

import socket
import threading
import time

__all__ = ["ServerThread", "register_zombies", "free_port"]

# uvicorn binds and starts the app (lifespan: subscription, preload) within seconds.
START_TIMEOUT_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerThread:
    """uvicorn serving ``app`` on a free port in a daemon thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                access_log=False, lifespan="on", log_config=None)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="gateway",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gateway failed to start; see the log above")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway did not start in {START_TIMEOUT_S} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=START_TIMEOUT_S)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def register_zombies(registry, model: str = "zombies", set_default: bool = True,
                     max_depth: int = 5) -> list:
    """Register v1 (trained on population A) and v2 (on B) of the article's model;
    v1 becomes the default. Returns the two version records."""
    from sklearn.tree import DecisionTreeClassifier

    from publishers.simulator import population

    records = []
    for name in ("A", "B"):
        X, y = population(name)
        fitted = DecisionTreeClassifier(max_depth=max_depth, random_state=0).fit(X, y)
        records.append(registry.register_version(
            model, fitted, estimator="decision-tree", X_reference=X,
            baseline_accuracy=float(fitted.score(X, y)), created_by="test:zombies",
            parent_version=records[-1].version if records else None))
    if set_default:
        registry.set_default(model, records[0].version, changed_by="test:zombies",
                             reason="first version")
    return records
