"""The gateway's parts and their lifecycle: config, model cache, prediction memory,
feedback publisher and the ``model-updates`` listener.

:class:`Gateway` holds what the routes share (``request.app.state.gateway``);
``start()`` runs before the first request, ``stop()`` after the last.
"""
from __future__ import annotations

import dataclasses
import logging
import os

from rotwatch.config import Settings
from rotwatch.events import ModelUpdate

from publishers.feedback_client import FeedbackPublisher
from publishers.gateway.auth import MIN_TOKEN_CHARS
from publishers.gateway.limits import DEFAULT_MAX_BODY_BYTES
from publishers.gateway.memory import DEFAULT_CAPACITY, DEFAULT_MAX_BYTES, DEFAULT_TTL_S, \
    PredictionMemory
from publishers.gateway.models import ModelCache, ModelUnavailable
from publishers.gateway.updates import ModelUpdateListener

__all__ = ["GatewayConfig", "Gateway", "TOKEN_ENV"]

_LOGGER = logging.getLogger(__name__)

TOKEN_ENV = "ROTWATCH_GATEWAY_TOKEN"
# A caller waits for Pub/Sub to confirm its feedback: 20 s rides out a few retries of
# a transient error and stays under common client and load-balancer timeouts (30 s+).
PUBLISH_TIMEOUT_S = 20.0
# A safety net under model-updates: re-read the defaults this often, so a lost
# message (or Pub/Sub being down) delays a switch by at most a minute.
REFRESH_INTERVAL_S = 60.0
# Batching delay of feedback publishes: a caller waits for it, so keep it small.
FEEDBACK_MAX_LATENCY_S = 0.005


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """How a gateway behaves; checked on construction."""

    auth_token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    memory_capacity: int = DEFAULT_CAPACITY
    memory_ttl_s: float = DEFAULT_TTL_S
    memory_max_bytes: int = DEFAULT_MAX_BYTES
    publish_timeout_s: float = PUBLISH_TIMEOUT_S
    listen_for_updates: bool = True
    preload: bool = True
    refresh_interval_s: float = REFRESH_INTERVAL_S
    changed_by: str = "gateway-api"
    fast_lane: bool = True   # serve loaded models' predictions before FastAPI's routing

    def __post_init__(self):
        if self.auth_token is not None and len(self.auth_token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the gateway token is {len(self.auth_token)} characters; use "
                             f"at least {MIN_TOKEN_CHARS} random ones (e.g. "
                             "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes={self.max_body_bytes} is too small for one "
                             "prediction request; use at least 1024")
        if self.publish_timeout_s <= 0:
            raise ValueError(f"publish_timeout_s={self.publish_timeout_s} must be positive")
        if self.refresh_interval_s <= 0:
            raise ValueError(f"refresh_interval_s={self.refresh_interval_s} must be "
                             "positive")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "GatewayConfig":
        """The token from ``ROTWATCH_GATEWAY_TOKEN`` (empty: no auth); flags win."""
        env = os.environ if environ is None else environ
        values = {"auth_token": env.get(TOKEN_ENV) or None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class Gateway:
    """What the routes share. Clients are made in :meth:`start` or on first use."""

    def __init__(self, settings: Settings, config: GatewayConfig, *, registry=None,
                 publisher: FeedbackPublisher | None = None, listener=None):
        self.settings = settings
        self.config = config
        if registry is None:
            from rotwatch.registry import Registry
            registry = Registry(settings)
        self.registry = registry
        self.cache = ModelCache(registry)
        self.memory = PredictionMemory(config.memory_capacity, config.memory_ttl_s,
                                       config.memory_max_bytes)
        self.publisher = publisher or FeedbackPublisher(
            settings, max_latency_s=FEEDBACK_MAX_LATENCY_S,
            retry_deadline_s=config.publish_timeout_s, keep_failures=False)
        self.listener = listener
        self.started = False
        self.fast_answers = 0   # predictions answered by the fast lane

    def start(self) -> None:
        """Listen for default changes first, then load defaults: no change is missed."""
        if self.config.listen_for_updates and self.listener is None:
            self.listener = ModelUpdateListener(self.settings, self.on_update)
        if self.listener is not None:
            self.listener.start()
        try:
            if self.config.preload:
                serving = self.cache.preload()
                _LOGGER.info("step=start serving=%s", serving)
        except BaseException:
            if self.listener is not None:   # leave no subscription behind
                self.listener.stop()
            raise
        self.started = True

    def on_update(self, update: ModelUpdate) -> None:
        """A ``model-updates`` message: switch to the registry's current default.

        Reads the registry rather than trusting the message, so updates delivered out
        of order still end on the latest default. A refused version is logged and the
        old one keeps serving (the message is done); a registry outage raises, so the
        message is redelivered.
        """
        _LOGGER.info("step=receive-update model=%s version=%s changed_by=%s",
                     update.model, update.default_version, update.changed_by)
        try:
            self.cache.refresh_default(update.model)
        except ModelUnavailable as exc:
            if exc.status >= 500:
                raise
            _LOGGER.error("step=apply-update model=%s version=%s outcome=kept serving=%s "
                          "reason=%s", update.model, update.default_version,
                          self.cache.serving().get(update.model), exc.message)

    def stop(self) -> None:
        try:
            if self.listener is not None:
                self.listener.stop()
        finally:
            self.started = False
            try:
                self.publisher.close(timeout=self.config.publish_timeout_s)
            except TimeoutError as exc:  # every caller already got its 202 or 503
                _LOGGER.error("step=stop outcome=unconfirmed-feedback error=%s", exc)
