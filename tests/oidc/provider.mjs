// The OpenID provider of the OIDC tests: node-oidc-provider (the npm package, unchanged) configured for
// modelhub, on 127.0.0.1. Started and stopped by tests/oidc/provider.py; reads its settings from the JSON
// file named by argv[2]:
//   {port, audience, keysFile, clients: [...], accounts: {id: {email, groups}}, clientClaims: {id: {...}}}
// keysFile holds the private JWKS ({keys: [...]}, RSA and EC); the first key of an algorithm signs.
// Test-only routes beside the provider's own: POST /test/rotate reloads keysFile (a new Provider with the
// new keys answers from then on), POST /test/alg?ES256 picks the access tokens' signing algorithm, GET
// /test/stats says how often the JWKS was fetched.
import fs from "node:fs";
import http from "node:http";
import Provider from "oidc-provider";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const issuer = `http://127.0.0.1:${config.port}`;
const state = { alg: "RS256", jwksHits: 0 };

function claimsOf(id) {
  const account = config.accounts[id] || {};
  return { sub: id, email: account.email || `${id}@example.com`, email_verified: true, groups: account.groups || [] };
}

function build() {
  const jwks = JSON.parse(fs.readFileSync(config.keysFile, "utf8"));
  const provider = new Provider(issuer, {
    clients: config.clients,
    jwks,
    cookies: { keys: ["modelhub-test-cookie-key"] },
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["groups"] },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => config.audience,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== config.audience) throw new Provider.errors.InvalidTarget();
          return {
            scope: "api",
            audience: config.audience,
            accessTokenFormat: "jwt",
            accessTokenTTL: 3600,
            jwt: { sign: { alg: state.alg } },
          };
        },
      },
    },
    // Sign-in needs no consent screen: every client here is first-party.
    loadExistingGrant: async (ctx) => {
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope("openid email profile");
      grant.addResourceScope(config.audience, "api");
      await grant.save();
      return grant;
    },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => claimsOf(id) }),
    // The API's access tokens carry who the caller is (a user, or for client_credentials the client).
    extraTokenClaims: async (_ctx, token) => {
      if (token.kind !== "AccessToken" && token.kind !== "ClientCredentials") return undefined;
      if (token.accountId) {
        const { email, groups } = claimsOf(token.accountId);
        return { email, email_verified: true, groups };
      }
      return config.clientClaims[token.clientId] || {};
    },
  });
  provider.use(async (ctx, next) => {
    if (ctx.path === "/jwks") state.jwksHits += 1;
    await next();
  });
  return provider;
}

let handler = build().callback();
const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === "/test/rotate" && req.method === "POST") {
    handler = build().callback();
    res.end("rotated");
  } else if (url.pathname === "/test/alg" && req.method === "POST") {
    state.alg = url.search.slice(1);
    res.end(state.alg);
  } else if (url.pathname === "/test/stats") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ jwksHits: state.jwksHits }));
  } else {
    handler(req, res);
  }
});
server.listen(config.port, "127.0.0.1", () => console.log(`listening ${issuer}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
