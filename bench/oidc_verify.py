"""What verifying one OIDC bearer JWT costs the server (signature, claims, grants), once the JWKS is cached.

Usage: python -m bench.oidc_verify [--tokens 2000]

In-process, no provider: the discovery document and the JWKS are served to the verifier by an httpx
MockTransport (fetched once, as in production), then each token is verified as a request's would be. Prints
the median and 99th percentile per token for RS256 (2048-bit) and ES256 (P-256), and the JWKS fetches made.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from graphql_api.oidc import GroupGrants, OidcVerifier

ISSUER = "https://sso.example.com/realms/ml"
AUDIENCE = "modelhub"


async def measure(count: int) -> None:
    rsa = RSAKey.generate_key(2048, {"kid": "rsa", "alg": "RS256"}, private=True)
    ec = ECKey.generate_key("P-256", {"kid": "ec", "alg": "ES256"}, private=True)
    jwks = KeySet([rsa, ec]).as_dict(private=False)
    fetches = 0

    def serve(request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": ISSUER + "/certs",
                                             "authorization_endpoint": ISSUER + "/auth",
                                             "token_endpoint": ISSUER + "/token"})  # fmt: skip
        fetches += 1
        return httpx.Response(200, json=jwks)

    grants = GroupGrants.parse({"vision-team": {"vision": "ENGINEER"}, "staff": {"*": "READER"}})
    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as http:
        verifier = OidcVerifier(ISSUER, AUDIENCE, http, grants=grants)
        for alg, key in (("RS256", rsa), ("ES256", ec)):
            now = int(time.time())
            claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "email": "alice@example.com",
                      "groups": ["vision-team", "staff"], "iat": now, "exp": now + 3600}  # fmt: skip
            header = {"alg": alg, "kid": key.kid}
            tokens = [jwt.encode(header, {**claims, "jti": str(i)}, key) for i in range(count)]
            await verifier.verify(tokens[0])  # the one JWKS fetch
            times = []
            for token in tokens:
                started = time.perf_counter()
                await verifier.verify(token)
                times.append(time.perf_counter() - started)
            times.sort()
            p99 = times[int(len(times) * 0.99) - 1]
            print(f"{alg}: median {statistics.median(times) * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs per token "
                  f"({count} tokens)")  # fmt: skip
    print(f"JWKS fetches: {fetches}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    asyncio.run(measure(parser.parse_args().tokens))


if __name__ == "__main__":
    main()
