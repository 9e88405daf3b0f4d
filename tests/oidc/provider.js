// A real OpenID provider (oidc-provider, OpenID Certified) for clustermgr's console
// tests, on loopback. Reads its settings from the JSON file named by its argument (so
// no secret is in argv): port, client_id, client_secret, redirect_uri, and roles (the
// `role` claim per account). Accounts log in through oidc-provider's development
// interactions (any password); the `role` claim goes into the ID token. `other_clients`
// registers more applications.
import fs from "node:fs";
import Provider from "oidc-provider";

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const issuer = `http://127.0.0.1:${cfg.port}`;
const provider = new Provider(issuer, {
  // The console's client, and any other (`other_clients`: another application of the
  // same provider, whose tokens the console must refuse).
  clients: [{ client_id: cfg.client_id, client_secret: cfg.client_secret, redirect_uri: cfg.redirect_uri },
    ...(cfg.other_clients ?? [])].map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: [c.redirect_uri],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  })),
  pkce: { required: () => true },
  claims: { openid: ["sub"], profile: ["preferred_username", "role"] },
  conformIdTokenClaims: false,
  cookies: { keys: ["clustermgr-test-cookie-key"] },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, preferred_username: id, role: cfg.roles[id] ?? "none" }),
  }),
  features: { devInteractions: { enabled: true } },
});
provider.listen(cfg.port, "127.0.0.1", () => {
  console.log(`listening ${issuer}`);
});
