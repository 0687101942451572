// End-to-end flow of the Postern web console in real Chromium (headless),
// driven by tests/web_ui.rs, which starts the server and passes:
//   POSTERN_URL            https://127.0.0.1:PORT
//   POSTERN_INITIAL_PW     the generated first admin password
//   POSTERN_NEW_PW         the password to change it to
//   POSTERN_SCREENSHOTS    directory for screenshots
//   CHROMIUM               browser binary (default /usr/bin/chromium)
//   POSTERN_CANARY         a secret that must never appear in the page except where retrieved
// Prints one line `RESULT {json}` at the end; exits non-zero on failure.
import { chromium } from 'playwright-core';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.env.POSTERN_URL;
const initialPw = process.env.POSTERN_INITIAL_PW;
const newPw = process.env.POSTERN_NEW_PW;
const shots = process.env.POSTERN_SCREENSHOTS;
const canary = process.env.POSTERN_CANARY;
const targetPort = process.env.POSTERN_TARGET_PORT;
const steps = [];
let watched = false;
let played = false;
let sharedConnect = false;
let requested = false;
const cspViolations = [];
const pageErrors = [];

function base32(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of s.replace(/=+$/, '').toUpperCase()) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error('bad base32');
    bits += v.toString(2).padStart(5, '0');
  }
  const out = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) out.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(out);
}

// RFC 6238 TOTP (SHA-1, 30 s, 6 digits).
function totp(secret, now = Date.now()) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(now / 1000 / 30)));
  const mac = createHmac('sha1', base32(secret)).update(counter).digest();
  const off = mac[mac.length - 1] & 0xf;
  const code = (mac.readUInt32BE(off) & 0x7fffffff) % 1000000;
  return String(code).padStart(6, '0');
}

async function shot(page, name) {
  const path = join(shots, `${String(steps.length + 1).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  steps.push({ step: name, screenshot: path });
}

const userDataDirs = [];
let context;
let result = { ok: false };

// A browser with its own fresh profile (its own cookies), headless Debian chromium.
async function launch() {
  const dir = mkdtempSync(join(tmpdir(), 'postern-chromium-'));
  userDataDirs.push(dir);
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 860 },
    timeout: 60000,
  });
  ctx.on('console', (m) => {
    if (/Content[- ]Security[- ]Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  // terminalText(): the xterm.js buffer as text (for waitForFunction/evaluate).
  await ctx.addInitScript(() => {
    window.terminalText = () => {
      const t = window.__posternTerminal;
      if (!t) return '';
      const b = t.buffer.active;
      let s = '';
      for (let i = 0; i < b.length; i++) {
        const l = b.getLine(i);
        if (l) s += l.translateToString(true) + '\n';
      }
      return s;
    };
  });
  return ctx;
}

try {
  context = await launch();
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Reasons asked with prompt(): answer them.
  page.on('dialog', (d) => d.accept(d.type() === 'prompt' ? 'e2e test: checking the console' : undefined));

  // 0. Positive control: the browser enforces the CSP and this script sees violations.
  await page.goto(base + '/');
  await page.evaluate(() => {
    const d = document.createElement('div');
    d.setAttribute('style', 'color: red');
    document.body.appendChild(d);
    d.remove();
  });
  for (let i = 0; i < 50 && cspViolations.length === 0; i++) await page.waitForTimeout(100);
  if (cspViolations.length === 0) throw new Error('no CSP violation seen for an inline style: CSP not enforced or not observed');
  cspViolations.length = 0;

  // Routes this server offers (screens of routes still being built elsewhere are checked when present).
  const routes = await page.evaluate(async () => Object.keys((await (await fetch('/api/v1/openapi.json')).json()).paths));

  // 1. First login with the generated password.
  await page.goto(base + '/');
  await page.getByLabel('User name', { exact: true }).fill('admin');
  await page.getByLabel('Password', { exact: true }).fill(initialPw);
  await shot(page, 'login');
  await page.getByRole('button', { name: 'Log in' }).click();

  // 2. Forced password change.
  await page.getByTestId('password-change-form').waitFor();
  await shot(page, 'forced-password-change');
  await page.getByLabel('New password', { exact: true }).fill(newPw);
  await page.getByLabel('New password again', { exact: true }).fill(newPw);
  await page.getByRole('button', { name: 'Change password' }).click();

  // 3. TOTP enrolment (the console goes to My account after the change).
  await page.getByTestId('totp-begin').click();
  await page.getByTestId('totp-qr').waitFor();
  const secret = (await page.getByTestId('totp-secret').textContent()).trim();
  await shot(page, 'totp-enrolment');
  const enrolStep = Math.floor(Date.now() / 30000);
  await page.getByLabel('Code', { exact: true }).fill(totp(secret));
  await page.getByRole('button', { name: 'Confirm' }).click();
  await page.getByTestId('totp-enabled').waitFor();
  await shot(page, 'totp-enabled');

  // 4. Add a resource.
  await page.getByRole('link', { name: 'Resources', exact: true }).click();
  await page.getByTestId('add-resource').click();
  await page.getByLabel('Name', { exact: true }).fill('e2e-linux-01');
  await page.getByLabel('Host', { exact: true }).fill('127.0.0.1');
  await page.getByLabel('Port', { exact: true }).fill(targetPort || '22');
  await page.getByLabel('Description', { exact: true }).fill('added by the browser test');
  await shot(page, 'resource-form');
  await page.getByRole('button', { name: 'Save resource' }).click();
  await page.getByRole('heading', { name: 'e2e-linux-01' }).waitFor();
  const resourceId = new URL(page.url()).pathname.split('/').pop();

  // 5. Add an account to it.
  const form = page.getByTestId('account-form');
  await form.getByLabel('Login', { exact: true }).fill('deploy');
  await form.getByLabel('Password', { exact: true }).fill(canary);
  await form.getByRole('button', { name: 'Save account' }).click();
  await page.getByTestId('accounts').getByRole('cell', { name: 'deploy', exact: true }).waitFor();
  const listed = await page.content();
  if (listed.includes(canary)) throw new Error('the account password appears in the page before retrieval');
  await shot(page, 'account-added');

  // 6. Retrieve it with a reason; it is shown, then hidden on request.
  await page.getByRole('button', { name: 'Retrieve' }).click();
  const shown = (await page.getByTestId('secret').textContent()).trim();
  if (shown !== canary) throw new Error('retrieved password differs');
  await page.getByRole('button', { name: 'Hide' }).click();
  await page.getByTestId('secret').waitFor({ state: 'detached' });

  // 6b. A one-time RDP ticket: the .rdp file downloads (user name, NLA on, never the password), the one-time
  // password is shown once.
  if (await page.getByRole('button', { name: 'Download .rdp' }).count()) {
    const [dl] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download .rdp' }).click(),
    ]);
    const rdp = readFileSync(await dl.path(), 'utf8');
    const ticketPw = (await page.getByTestId('rdp-ticket-password').textContent()).trim();
    if (!/username:s:pt-[0-9a-f]{20}\r\n/.test(rdp) || !rdp.includes('enablecredsspsupport:i:1')) {
      throw new Error(`unexpected .rdp file: ${rdp}`);
    }
    if (ticketPw.length !== 24 || rdp.includes(ticketPw)) throw new Error('bad one-time RDP password');
    await shot(page, 'rdp-ticket');
    await page.getByTestId('rdp-ticket').getByRole('button', { name: 'Hide' }).click();
    await page.getByTestId('rdp-ticket').waitFor({ state: 'detached' });
  }

  // 7. One-click logon: a terminal in the browser through the gateway to a real sshd.
  if (targetPort) {
    const termPage = page;
    await termPage.getByRole('button', { name: 'Connect' }).click();
    await termPage.getByTestId('terminal-status').filter({ hasText: 'connected' }).waitFor();
    await termPage.waitForFunction(() => window.__posternTerminal && terminalText().length > 0, null, { timeout: 20000 })
      .catch(() => {});
    await termPage.locator('.xterm-helper-textarea').focus();
    await termPage.keyboard.type('id; echo done-$((6*7))\n');
    await termPage.waitForFunction(() => /uid=\d+\(deploy\)/.test(terminalText()) && terminalText().includes('done-42'), null, { timeout: 20000 });
    await shot(termPage, 'terminal');
    const termText = await termPage.evaluate(() => terminalText());
    if (termText.includes(canary)) throw new Error('the account password reached the browser terminal');

    // 8. An administrator sees it live and ends it with a reason.
    const admin = await context.newPage();
    admin.on('dialog', (d) => d.accept(d.type() === 'prompt' ? 'e2e test: ending the session' : undefined));
    admin.on('pageerror', (e) => pageErrors.push(String(e)));
    await admin.goto(base + '/sessions');
    const row = admin.getByTestId('sessions').getByRole('row').filter({ hasText: 'deploy' });
    await row.waitFor();
    await shot(admin, 'live-sessions');
    if (routes.includes('/api/v1/sessions/{id}/watch')) {
      // Watch it live: the recent screen first, then what follows.
      await row.getByRole('button', { name: 'Watch' }).click();
      await admin.getByTestId('terminal-status').filter({ hasText: 'connected' }).waitFor();
      await admin.waitForFunction(() => terminalText().includes('done-42'), null, { timeout: 20000 });
      await termPage.locator('.xterm-helper-textarea').focus();
      await termPage.keyboard.type('echo reviewmarker-$((5*5))\n');
      await admin.waitForFunction(() => terminalText().includes('reviewmarker-25'), null, { timeout: 20000 });
      await shot(admin, 'watching');
      watched = true;
      await admin.goto(base + '/sessions');
      await row.waitFor();
    }
    await row.getByRole('button', { name: 'Terminate' }).click();
    await admin.getByText('No live sessions.').waitFor();
    await termPage.getByTestId('terminal-status').filter({ hasText: /ended|closed/ }).waitFor();
    await shot(termPage, 'terminal-terminated');
    await admin.close();

    if (routes.includes('/api/v1/recordings/search')) {
      // 8b. A reviewer finds the session by a word typed in it and plays it.
      await page.goto(base + '/recordings');
      const word = watched ? 'reviewmarker' : 'done';
      await page.getByLabel('Search recordings', { exact: true }).fill(word);
      const results = page.getByTestId('search-results').getByRole('link');
      for (let i = 0; i < 60 && (await results.count()) === 0; i++) {
        await page.getByRole('button', { name: 'Search', exact: true }).click();
        await page.waitForTimeout(500);
      }
      await shot(page, 'recording-search');
      await results.first().click();
      await page.getByTestId('verification').waitFor();
      const verdict = await page.getByTestId('verification').textContent();
      if (!/verified/.test(verdict) || /NOT/.test(verdict)) throw new Error('recording verification: ' + verdict);
      await page.getByTestId('player').getByText(watched ? 'reviewmarker-25' : 'done-42').first().waitFor({ timeout: 20000 });
      await shot(page, 'recording-player');
      played = true;
    }
    await page.goto(base + '/resources');
  }

  // 8b. Settings: the effective configuration, read-only; the dashboard counts passwords due for rotation.
  await page.getByRole('link', { name: 'Settings', exact: true }).click();
  await page.getByTestId('settings').getByRole('row').filter({ hasText: 'ssh.idle_timeout' }).waitFor();
  await shot(page, 'settings');
  await page.getByRole('link', { name: 'Dashboard', exact: true }).click();
  await page.waitForFunction(() => /^\d+$/.test(document.querySelector('[data-testid=due-count]')?.textContent.trim() ?? ''),
    null, { timeout: 10000 });

  // 9. CSV import: preview with a locally flagged row, then the server's per-row errors.
  await page.getByRole('link', { name: 'Import', exact: true }).click();
  const csv = [
    'name,type,host,port,account,password',
    'imp-ok-1,linux,192.0.2.21,22,root,' + canary + '-imp',
    'imp-bad-port,linux,192.0.2.22,99999,root,x',
    'imp-bad-type,toaster,192.0.2.23,22,root,x',
  ].join('\n') + '\n';
  await page.getByLabel('CSV text', { exact: true }).fill(csv);
  const preview = page.getByTestId('import-preview');
  await preview.waitFor();
  await preview.getByRole('row').filter({ hasText: 'imp-bad-port' }).getByText('port is not 1–65535').waitFor();
  if ((await preview.textContent()).includes(canary)) throw new Error('the preview shows a password');
  await page.getByTestId('import-submit').click();
  const report = page.getByTestId('import-report');
  await report.waitFor();
  const reportText = await report.textContent();
  if (!/3 rows: 1 resources and 1 accounts created,\s*2 rows refused/.test(reportText)) throw new Error('import report: ' + reportText);
  await preview.getByRole('row').filter({ hasText: 'imp-bad-type' }).getByText(/type/).last().waitFor();
  await shot(page, 'import');

  // 10. Users: add one.
  await page.getByRole('link', { name: 'Users', exact: true }).click();
  await page.getByRole('button', { name: 'Add user' }).click();
  await page.getByLabel('User name', { exact: true }).fill('carol');
  await page.getByLabel('Initial password', { exact: true }).fill('carol initial passphrase');
  await page.getByRole('button', { name: 'Create user' }).click();
  await page.getByTestId('users').getByRole('cell', { name: 'carol', exact: true }).waitFor();
  await shot(page, 'users');

  if (targetPort && routes.includes('/api/v1/shares')) {
    // 10b. Share the account connect-only with carol; she opens a terminal but cannot retrieve the password.
    const accountId = await page.evaluate(async (rid) => {
      const r = await fetch(`/api/v1/resources/${rid}/accounts`);
      return (await r.json()).find((a) => a.login === 'deploy').id;
    }, resourceId);
    await page.getByRole('link', { name: 'Shares', exact: true }).click();
    const form = page.getByTestId('share-form');
    await form.locator('#principal').selectOption({ label: 'carol' });
    await form.locator('#object').selectOption(accountId);
    await form.locator('#level').selectOption('connect');
    await form.getByRole('button', { name: 'Share' }).click();
    await page.getByTestId('shares').getByRole('cell', { name: 'deploy@e2e-linux-01' }).waitFor();
    await shot(page, 'shares');

    const carolCtx = await launch();
    const carol = carolCtx.pages()[0] || (await carolCtx.newPage());
    carol.setDefaultTimeout(15000);
    carol.on('pageerror', (e) => pageErrors.push(String(e)));
    await carol.goto(base + '/');
    await carol.getByLabel('User name', { exact: true }).fill('carol');
    await carol.getByLabel('Password', { exact: true }).fill('carol initial passphrase');
    await carol.getByRole('button', { name: 'Log in' }).click();
    await carol.getByTestId('password-change-form').waitFor();
    await carol.getByLabel('New password', { exact: true }).fill('carol chose this passphrase');
    await carol.getByLabel('New password again', { exact: true }).fill('carol chose this passphrase');
    await carol.getByRole('button', { name: 'Change password' }).click();
    await carol.getByTestId('whoami').filter({ hasText: 'carol' }).waitFor();
    const refused = await carol.evaluate(async (id) => {
      const s = await (await fetch('/api/v1/auth/session')).json();
      const r = await fetch(`/api/v1/accounts/${id}/retrieve`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token },
        body: JSON.stringify({ reason: 'e2e: connect-only must not retrieve' }),
      });
      return { status: r.status, body: await r.text() };
    }, accountId);
    if (refused.status < 400 || refused.body.includes(canary)) throw new Error('connect-only retrieve was not refused: ' + refused.status);
    await carol.goto(base + `/terminal/${accountId}`);
    await carol.getByTestId('terminal-status').filter({ hasText: 'connected' }).waitFor();
    await carol.waitForFunction(() => window.__posternTerminal && terminalText().includes('$'), null, { timeout: 20000 }).catch(() => {});
    await carol.locator('.xterm-helper-textarea').focus();
    await carol.keyboard.type('id -un; exit\n');
    await carol.waitForFunction(() => /\ndeploy\s*\n/.test(terminalText()), null, { timeout: 20000 });
    await shot(carol, 'connect-only-terminal');
    const carolText = await carol.evaluate(() => terminalText());
    if (carolText.includes(canary)) throw new Error('the password reached carol\'s browser');
    sharedConnect = true;

    if (routes.includes('/api/v1/access-requests') && routes.includes('/api/v1/resources/{id}/access-policy')) {
      // 10c. Access requests: the resource now needs an approved request; carol asks, admin approves,
      // carol checks out (countdown) and checks in.
      await page.goto(base + `/resources/${resourceId}`);
      const policy = page.getByTestId('access-policy');
      await policy.getByLabel('sessions and retrievals need an approved request').check();
      await policy.getByLabel('reset the password at check-in').uncheck();
      await policy.getByRole('button', { name: 'Save policy' }).click();
      await policy.getByText('saved').waitFor();

      await carol.goto(base + `/access-requests?account=${accountId}`);
      const rform = carol.getByTestId('request-form');
      await rform.locator('#reason').fill('e2e: maintenance window');
      await rform.getByRole('button', { name: 'Request access' }).click();
      await carol.getByTestId('access-requests').getByRole('cell', { name: /requested/ }).waitFor();

      await page.goto(base + '/access-requests');
      const req = page.getByTestId('access-requests').getByRole('row').filter({ hasText: 'e2e: maintenance window' });
      await req.getByRole('button', { name: 'Approve' }).click();
      await req.getByRole('cell', { name: /^approved/ }).waitFor();

      await carol.reload();
      const mine = carol.getByTestId('access-requests').getByRole('row').filter({ hasText: 'e2e: maintenance window' });
      await mine.getByRole('button', { name: 'Check out' }).click();
      await mine.getByTestId('countdown').waitFor();
      await shot(carol, 'access-request-checked-out');
      await mine.getByRole('button', { name: 'Check in' }).click();
      await mine.getByRole('cell', { name: /checked in/ }).waitFor();
      requested = true;
    }
    await carolCtx.close();
  }

  // 11. The audit trail shows what happened; filter and export it.
  await page.getByRole('link', { name: 'Audit', exact: true }).click();
  await page.getByTestId('audit').getByRole('cell', { name: 'account.retrieve' }).first().waitFor();
  if (targetPort) {
    await page.getByTestId('audit').getByRole('cell', { name: 'session.start' }).first().waitFor();
    await page.getByTestId('audit').getByRole('cell', { name: /session\.terminate/ }).first().waitFor();
  }
  await shot(page, 'audit');
  await page.getByLabel('Action', { exact: true }).fill('account.');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByTestId('audit').getByRole('cell', { name: 'resource.create' }).first().waitFor({ state: 'detached' });
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('audit-export').click()]);
  const exported = await (async () => {
    const chunks = [];
    for await (const c of await download.createReadStream()) chunks.push(c);
    return Buffer.concat(chunks).toString('utf8');
  })();
  if (!exported.startsWith('seq,at,actor_name,action') || !exported.includes('account.retrieve') || exported.includes('resource.create,')) {
    throw new Error('audit CSV export: ' + exported.slice(0, 300));
  }
  if (exported.includes(canary)) throw new Error('the password is in the audit export');

  // 12. Log out; logging in again asks for a TOTP code (a code is accepted once: wait for a fresh one).
  await page.getByTestId('logout').click();
  await page.getByLabel('User name', { exact: true }).fill('admin');
  await page.getByLabel('Password', { exact: true }).fill(newPw);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByLabel('Authenticator code', { exact: true }).waitFor();
  await shot(page, 'login-totp');
  while (Math.floor(Date.now() / 30000) <= enrolStep) await page.waitForTimeout(500);
  await page.getByLabel('Authenticator code', { exact: true }).fill(totp(secret));
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('whoami').filter({ hasText: 'admin' }).waitFor();
  const audit = await page.content();
  if (audit.includes(canary)) throw new Error('the password appears in the audit page');

  result = { ok: cspViolations.length === 0 && pageErrors.length === 0, steps, watched, played, sharedConnect, requested, routes, cspViolations, pageErrors };
} catch (e) {
  result = { ok: false, error: String(e && e.stack ? e.stack : e), steps, cspViolations, pageErrors };
  try {
    const p = context && context.pages()[0];
    if (p) {
      const path = join(shots, 'failure.png');
      await p.screenshot({ path, fullPage: true });
      result.failureScreenshot = path;
    }
  } catch {}
} finally {
  if (context) await context.close().catch(() => {});
  for (const d of userDataDirs) rmSync(d, { recursive: true, force: true });
}
console.log('RESULT ' + JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
