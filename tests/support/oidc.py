"""Starts our OpenID provider script (oidc_provider.mjs, npm oidc-provider) on loopback for the sign-in tests,
and drives its side of the flow over HTTP the way a browser would.

* `rsa_signing_key(kid)`: an RSA key generated here, handed to the provider as its JWKS, so a test can also
  mint tokens "from" the provider where a real provider cannot be made to issue a bad one (`mint`).
* `OidcProvider.start(clients=..., accounts=...)`: the Node process; `issuer` is its URL. Controls:
  `id_token_override(token)` (the next token response carries that ID token), `account_set(sub, claims)`,
  `slow_next(path, byte_delay_s=...)` (the next answer at that path trickles in a byte at a time).
* `ProviderBrowser`: a cookie-keeping HTTP client for the provider's pages: `authorize(url, sub=...)`
  follows the authorization request through our login interaction and returns the redirect back to the
  client; `end_session(url)` confirms RP-initiated logout and returns where the provider sends the user.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
START_TIMEOUT_S = 20.0  # Node + oidc-provider start in well under a second; a loaded CI machine is slower
HTTP_TIMEOUT_S = 5.0
MAX_REDIRECTS = 10
ZITADEL_ROLES_CLAIM = "urn:zitadel:iam:org:project:roles"


def node_binary() -> str | None:
    return shutil.which("node")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    def private_jwk(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key))
        jwk.pop("key_ops", None)  # PyJWT writes ["sign"]; the provider also verifies with it (id_token_hint)
        return {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}


def rsa_signing_key(kid: str) -> SigningKey:
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def mint(claims: dict[str, Any], *, key: SigningKey | None, alg: str = "RS256", secret: str = "") -> str:
    """A token signed like the provider's (RS256 with its key), or with `alg` "none" / HS256 + `secret`."""
    if alg == "none":
        return jwt.encode(claims, key=None, algorithm="none")
    if alg.startswith("HS"):
        return jwt.encode(claims, key=secret, algorithm=alg)
    assert key is not None
    return jwt.encode(claims, key=key.private_key, algorithm=alg, headers={"kid": key.kid})


@dataclass
class OidcProvider:
    issuer: str
    key: SigningKey
    process: subprocess.Popen
    workdir: tempfile.TemporaryDirectory

    @classmethod
    def start(cls, *, clients: list[dict], accounts: dict[str, dict], key: SigningKey,
              roles_claim: str = ZITADEL_ROLES_CLAIM) -> OidcProvider:
        node = node_binary()
        if node is None:
            raise RuntimeError("node is not installed: the OIDC tests need Node.js and `make` (npm ci)")
        workdir = tempfile.TemporaryDirectory(prefix="oidc-provider-")
        config_path = Path(workdir.name) / "config.json"
        config_path.write_text(json.dumps({
            "clients": clients, "accounts": accounts, "jwks": {"keys": [key.private_jwk()]}, "rolesClaim": roles_claim,
        }))
        log_path = Path(workdir.name) / "provider.log"  # a file, so a chatty provider never blocks on a pipe
        with log_path.open("w") as log:
            process = subprocess.Popen([node, str(SCRIPT), str(config_path)], stdout=subprocess.PIPE, stderr=log,
                                       cwd=SCRIPT.parent, text=True)
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        line = process.stdout.readline() if ready else ""
        if not line:
            process.kill()
            stderr = log_path.read_text()
            workdir.cleanup()
            raise RuntimeError(f"the OIDC provider did not start within {START_TIMEOUT_S} s: {stderr[-2000:]}")
        return cls(issuer=json.loads(line)["issuer"], key=key, process=process, workdir=workdir)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self.workdir.cleanup()

    def log(self) -> str:
        """What the provider wrote to stderr (its errors, with causes)."""
        return (Path(self.workdir.name) / "provider.log").read_text()

    def id_token_override(self, token: str) -> None:
        response = requests.post(f"{self.issuer}/__test/id_token_override", json={"id_token": token},
                                 timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()

    def reset(self) -> None:
        """Drop queued overrides and restore the accounts given at start (between tests)."""
        requests.post(f"{self.issuer}/__test/reset", timeout=HTTP_TIMEOUT_S).raise_for_status()

    def slow_next(self, path: str, *, byte_delay_s: float) -> None:
        """The next answer at `path` (e.g. "/token") comes a byte at a time, `byte_delay_s` apart."""
        response = requests.post(f"{self.issuer}/__test/slow",
                                 json={"path": path, "byte_delay_ms": int(byte_delay_s * 1000)}, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()

    def account_set(self, sub: str, claims: dict[str, Any]) -> None:
        response = requests.post(f"{self.issuer}/__test/account", json={"sub": sub, "claims": claims},
                                 timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()


@dataclass
class ProviderBrowser:
    """The provider's half of a browser: its own cookies, our login interaction, no redirect past the provider."""

    provider: OidcProvider
    session: requests.Session = field(default_factory=requests.Session)
    logins: int = 0

    def authorize(self, url: str, *, sub: str | None) -> str:
        """Follow an authorization request; sign in as `sub` when asked. Returns the URL the provider sends
        the user back to (the client's redirect URI with code and state, or with an error)."""
        for _ in range(MAX_REDIRECTS):
            if not url.startswith(self.provider.issuer + "/"):
                return url
            response = self.session.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT_S)
            if response.is_redirect:
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status_code == 200 and "/interaction/" in url:
                assert sub is not None, "the provider asks for a login, and no account was given"
                login = self.session.post(url + "/login", data={"sub": sub}, allow_redirects=False,
                                          timeout=HTTP_TIMEOUT_S)
                assert login.is_redirect, f"login interaction answered {login.status_code}: {login.text[:300]}"
                self.logins += 1
                url = urljoin(url, login.headers["Location"])
                continue
            raise AssertionError(f"the provider answered {response.status_code} at {url}: {response.text[:500]}")
        raise AssertionError("too many redirects at the provider")

    def id_token_for(self, *, client_id: str, client_secret: str, redirect_uri: str, nonce: str, sub: str) -> str:
        """A real ID token from this provider for `client_id`: a whole code flow (with PKCE) run directly."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                           "scope": "openid email profile", "state": secrets.token_urlsafe(16), "nonce": nonce,
                           "code_challenge": challenge, "code_challenge_method": "S256"})
        back = self.authorize(f"{self.provider.issuer}/auth?{query}", sub=sub)
        code = parse_qs(urlsplit(back).query)["code"][0]
        token_request = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                         "code_verifier": verifier}
        response = requests.post(f"{self.provider.issuer}/token", auth=(client_id, client_secret),
                                 timeout=HTTP_TIMEOUT_S, data=token_request)
        assert response.status_code == 200, response.text[:500]
        return response.json()["id_token"]

    def end_session(self, url: str) -> str:
        """Confirm RP-initiated logout on the provider's page; returns where it redirects afterwards."""
        page = self.session.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT_S)
        assert page.status_code == 200, f"end_session answered {page.status_code}: {page.text[:500]}"
        action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        assert action, f"no logout form on the provider's page: {page.text[:500]}"
        fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text))
        fields["logout"] = "yes"
        done = self.session.post(urljoin(url, action.group(1)), data=fields, allow_redirects=False,
                                 timeout=HTTP_TIMEOUT_S)
        for _ in range(MAX_REDIRECTS):
            if not done.is_redirect:
                raise AssertionError(f"logout confirmation answered {done.status_code}: {done.text[:500]}")
            target = urljoin(url, done.headers["Location"])
            if not target.startswith(self.provider.issuer + "/"):
                return target
            done = self.session.get(target, allow_redirects=False, timeout=HTTP_TIMEOUT_S)
        raise AssertionError("too many redirects at the provider's logout")
