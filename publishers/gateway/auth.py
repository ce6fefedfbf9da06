"""Optional bearer-token auth for the feedback and admin routes.

With a token configured (``ROTWATCH_GATEWAY_TOKEN`` or ``--token-file``), those routes
need ``Authorization: Bearer <token>``; predictions and model reads stay open, as an
app's predict traffic usually sits behind the platform's own auth (Cloud Run IAM).
Tokens are compared in constant time, so timing does not reveal how much matched.
"""
from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from publishers.gateway.errors import ApiError

__all__ = ["require_token", "check_token", "MIN_TOKEN_CHARS"]

# A shorter secret can be guessed online; 16 random characters cannot.
MIN_TOKEN_CHARS = 16

_bearer = HTTPBearer(auto_error=False, description="the gateway's token "
                     "(ROTWATCH_GATEWAY_TOKEN); required only when one is configured")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rotwatch"'}


def check_token(expected: str | None, given: str | None) -> bool:
    """True when no token is configured, or ``given`` equals it (constant time)."""
    if not expected:
        return True
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def require_token(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
                        ) -> None:
    expected = request.app.state.gateway.config.auth_token
    if not expected:
        return
    if credentials is None:
        raise ApiError(401, "this route needs 'Authorization: Bearer <token>' "
                            "(the gateway's ROTWATCH_GATEWAY_TOKEN)", _CHALLENGE)
    if not check_token(expected, credentials.credentials):
        raise ApiError(401, "the bearer token is not valid for this gateway", _CHALLENGE)
