"""The prediction + feedback HTTP gateway (``rotwatch gateway run``).

>>> from publishers.gateway import create_app        # doctest: +SKIP
>>> app = create_app(Settings.from_env())             # run with uvicorn

Modules: :mod:`~publishers.gateway.app` (the app), :mod:`.predict`, :mod:`.feedback`,
:mod:`.admin` (routes), :mod:`.models` (the model cache), :mod:`.memory`
(prediction ids), :mod:`.updates` (``model-updates`` listener), :mod:`.service`
(config and lifecycle), :mod:`.schemas`, :mod:`.errors`, :mod:`.limits`, :mod:`.auth`.

Run it: ``rotwatch gateway run --port 8080``.
"""
from publishers.gateway.app import create_app
from publishers.gateway.service import Gateway, GatewayConfig

__all__ = ["create_app", "Gateway", "GatewayConfig"]
