"""OpenID Connect sign-in with Authlib (its ``requests`` client): authorization code with PKCE (S256), a
nonce, the ID token checked.

The issuer's discovery document (``/.well-known/openid-configuration``) and keys are read when someone
signs in and kept for five minutes. The ``state`` is a one-time secret stored hashed with the PKCE
verifier and the nonce (``core.access.console.begin_oidc``): any node can finish a sign-in another began.
The ID token's signature, issuer, audience, expiry and nonce are checked (``joserfc``, Authlib's JOSE);
its claims are then mapped to a role and scope by ``NEXMDM_OIDC_ROLES``.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2 import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from core.base.errors import InvalidCredentials
from core.base.settings import Settings

SCOPES = "openid email profile"
DISCOVERY_SECONDS = 300.0
TIMEOUT_SECONDS = 10.0


class Provider:
    """The configured issuer, its discovery document cached (one per app, on ``app.state``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._metadata: dict[str, Any] | None = None
        self._read_at = 0.0

    def _get(self, url: str) -> dict[str, Any]:
        try:
            answer = requests.get(url, timeout=TIMEOUT_SECONDS)
            answer.raise_for_status()
            data = answer.json()
        except (requests.RequestException, ValueError) as exc:
            raise InvalidCredentials(f"the identity provider did not answer ({exc.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise InvalidCredentials("the identity provider sent something other than a JSON object")
        return data

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._read_at > DISCOVERY_SECONDS:
            issuer = self.settings.oidc_issuer.rstrip("/")
            self._metadata = self._get(f"{issuer}/.well-known/openid-configuration")
            self._read_at = time.monotonic()
        return self._metadata

    def _client(self, redirect_uri: str) -> OAuth2Session:
        return OAuth2Session(
            client_id=self.settings.oidc_client_id,
            client_secret=self.settings.oidc_client_secret or None,
            scope=SCOPES,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )

    def authorization_url(self, redirect_uri: str, state: str, code_verifier: str, nonce: str) -> str:
        with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                self.metadata()["authorization_endpoint"], state=state, code_verifier=code_verifier, nonce=nonce
            )
        return str(url)

    def claims(self, redirect_uri: str, code: str, code_verifier: str, nonce: str) -> dict[str, Any]:
        """Trade the code for tokens and return the checked ID token's claims."""
        metadata = self.metadata()
        try:
            with self._client(redirect_uri) as client:
                token = client.fetch_token(
                    metadata["token_endpoint"], code=code, code_verifier=code_verifier, timeout=TIMEOUT_SECONDS
                )
            keys = KeySet.import_key_set(self._get(metadata["jwks_uri"]))  # type: ignore[arg-type]
            decoded = jwt.decode(token["id_token"], keys)
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": metadata["issuer"]},
                aud={"essential": True, "value": self.settings.oidc_client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (OAuth2Error, JoseError, KeyError, ValueError, requests.RequestException) as exc:
            raise InvalidCredentials(f"the sign-in was refused ({exc.__class__.__name__})") from None
        return dict(decoded.claims)


def new_verifier() -> str:
    return str(generate_token(64))


def new_nonce() -> str:
    return str(generate_token(32))
