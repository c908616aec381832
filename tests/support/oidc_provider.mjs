// A real OpenID provider (npm oidc-provider) on loopback for the sign-in tests: the project's own small
// configuration of the library, never used outside tests.
//
// Usage: node oidc_provider.mjs <config.json>. It listens on 127.0.0.1 (port 0: any free one) and prints
// one JSON line {"issuer": "http://127.0.0.1:<port>"} once it is ready. The config file holds:
//   jwks: {keys: [private RSA JWK]} (the harness generates it, so tests can also mint tokens with it),
//   clients: [oidc-provider client metadata], accounts: {sub: {claims}}, rolesClaim: "<claim name>".
// PKCE (S256) is required for every client. The login interaction is our own, driven over HTTP:
//   GET  /interaction/<uid>        -> JSON {uid, prompt, client_id}
//   POST /interaction/<uid>/login  (form: sub=<account>) -> redirect back into the flow
// Test controls (loopback only, this script only):
//   POST /__test/id_token_override  (JSON {id_token}) the next token response carries this id_token
//   POST /__test/account            (JSON {sub, claims}) set or replace an account's claims
//   POST /__test/slow               (JSON {path, byte_delay_ms}) the next answer at that path (e.g. /token) is
//                                   sent a byte at a time, byte_delay_ms apart: a provider too slow to wait for
//   POST /__test/reset              forget queued overrides and slow answers, restore the config's accounts
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let accounts = structuredClone(config.accounts || {});
const idTokenOverrides = [];
const slowAnswers = new Map(); // path -> delay between bytes (ms), for the next answer at that path
const rolesClaim = config.rolesClaim || 'urn:zitadel:iam:org:project:roles';

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer();
server.listen(config.port || 0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients,
    jwks: config.jwks,
    cookies: { keys: ['test-cookie-key-not-secret'] },
    pkce: { required: () => true },
    claims: {
      openid: ['sub', rolesClaim],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      'urn:zitadel:iam:user:resourceowner': ['urn:zitadel:iam:user:resourceowner:id'],
    },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = `<!DOCTYPE html><html><body>${form}<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button></body></html>`;
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    // First-party console: no consent screen; the grant covers what was asked.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const existing = await ctx.oidc.provider.Grant.find(grantId);
        if (existing) return existing;
      }
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope(ctx.oidc.params.scope || 'openid');
      await grant.save();
      return grant;
    },
    async findAccount(ctx, sub) {
      if (!accounts[sub]) return undefined;
      return { accountId: sub, async claims() { return { sub, ...accounts[sub] }; } };
    },
    renderError(ctx, out, error) {
      process.stderr.write(`oidc-provider error: ${error && error.stack}\ncause: ${error && error.cause && error.cause.stack}\n`);
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  for (const event of ['end_session.error', 'grant.error', 'authorization.error', 'server_error', 'userinfo.error']) {
    provider.on(event, (ctx, error) => {
      process.stderr.write(`${event}: ${error && error.message}; cause: ${error && error.cause && error.cause.message}\n`);
    });
  }
  // Registered first, so it sees the final body (the override below included).
  provider.use(async (ctx, next) => {
    await next();
    if (!slowAnswers.has(ctx.path) || ctx.body == null) return;
    const delay = slowAnswers.get(ctx.path);
    slowAnswers.delete(ctx.path);
    const bytes = Buffer.isBuffer(ctx.body) ? ctx.body
      : Buffer.from(typeof ctx.body === 'string' ? ctx.body : JSON.stringify(ctx.body));
    ctx.body = Readable.from((async function* trickle() {
      for (const byte of bytes) {
        await sleep(delay);
        yield Buffer.from([byte]);
      }
    })());
  });
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && ctx.status === 200 && idTokenOverrides.length && ctx.body && ctx.body.id_token) {
      ctx.body = { ...ctx.body, id_token: idTokenOverrides.shift() };
    }
  });
  const callback = provider.callback();

  server.on('request', async (req, res) => {
    try {
      const url = new URL(req.url, issuer);
      let match = url.pathname.match(/^\/interaction\/([^/]+)$/);
      if (match && req.method === 'GET') {
        const details = await provider.interactionDetails(req, res);
        return sendJson(res, 200, { uid: details.uid, prompt: details.prompt.name, client_id: details.params.client_id });
      }
      match = url.pathname.match(/^\/interaction\/([^/]+)\/login$/);
      if (match && req.method === 'POST') {
        const form = new URLSearchParams(await readBody(req));
        const sub = form.get('sub');
        if (!accounts[sub]) return sendJson(res, 400, { error: `unknown account ${sub}` });
        return await provider.interactionFinished(req, res, { login: { accountId: sub } }, { mergeWithLastSubmission: false });
      }
      if (url.pathname === '/__test/id_token_override' && req.method === 'POST') {
        idTokenOverrides.push(JSON.parse(await readBody(req)).id_token);
        return sendJson(res, 200, { queued: idTokenOverrides.length });
      }
      if (url.pathname === '/__test/slow' && req.method === 'POST') {
        const body = JSON.parse(await readBody(req));
        slowAnswers.set(body.path, body.byte_delay_ms);
        return sendJson(res, 200, { ok: true });
      }
      if (url.pathname === '/__test/reset' && req.method === 'POST') {
        idTokenOverrides.length = 0;
        slowAnswers.clear();
        accounts = structuredClone(config.accounts || {});
        return sendJson(res, 200, { ok: true });
      }
      if (url.pathname === '/__test/account' && req.method === 'POST') {
        const body = JSON.parse(await readBody(req));
        accounts[body.sub] = body.claims;
        return sendJson(res, 200, { ok: true });
      }
      return callback(req, res);
    } catch (err) {
      return sendJson(res, 500, { error: String(err && err.message || err) });
    }
  });
  process.stdout.write(JSON.stringify({ issuer }) + '\n');
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
