// The console's RDP screens in real Chromium (headless), driven by tests/rdp_recording.rs, which starts the
// server and passes:
//   POSTERN_URL        https://127.0.0.1:PORT
//   POSTERN_PW         the admin's password
//   POSTERN_RECORDING  a recording's id (a desktop that is red, then green in its top-left quarter): the player
//                      plays it to the end, then seeks back to 1 s
//   POSTERN_LIVE       instead: a live RDP session is watched from the Sessions page, and the result holds the
//                      colours at POSTERN_POINTS ("x,y;x,y…") of the first live frame
//   CHROMIUM           browser binary (default /usr/bin/chromium)
// Prints one line `RESULT {json}` at the end; exits non-zero on failure.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.env.POSTERN_URL;
const result = { ok: false, pixels: {} };
const dir = mkdtempSync(join(tmpdir(), 'postern-chromium-'));
let context;

// The colour of pixel (x, y) of a canvas the console draws frames on.
async function pixel(page, x, y, testid) {
  return page.evaluate(([x, y, testid]) => {
    const c = document.querySelector(`[data-testid=${testid}]`);
    return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
  }, [x, y, testid]);
}

// How many frames a canvas has shown.
const frames = (page, testid) =>
  page.evaluate((t) => Number(document.querySelector(`[data-testid=${t}]`)?.dataset.frames || 0), testid);

async function moreFrames(page, testid, before) {
  await page.waitForFunction(([t, b]) => Number(document.querySelector(`[data-testid=${t}]`)?.dataset.frames || 0) > b,
    [testid, before], { timeout: 30000 });
}

async function recording(page) {
  await page.goto(base + '/recordings/' + process.env.POSTERN_RECORDING);
  await moreFrames(page, 'rdp-frame', 0);
  // It plays by itself to the end, where the top-left quarter is green.
  await page.getByTestId('rdp-play').filter({ hasText: 'Play' }).waitFor({ timeout: 20000 });
  result.pixels.end = await pixel(page, 10, 10, 'rdp-frame');
  result.time_end = await page.getByTestId('rdp-time').textContent();
  // Seek back to 1 s: red everywhere.
  const before = await frames(page, 'rdp-frame');
  await page.getByTestId('rdp-seek').fill('1');
  await moreFrames(page, 'rdp-frame', before);
  result.pixels.start = await pixel(page, 10, 10, 'rdp-frame');
  result.pixels.start_far = await pixel(page, 150, 110, 'rdp-frame');
  result.time_start = await page.getByTestId('rdp-time').textContent();
  result.width = await page.getByTestId('rdp-frame').evaluate((c) => c.width);
}

async function live(page) {
  await page.getByRole('link', { name: 'Live sessions', exact: true }).click();
  await page.getByTestId('sessions').getByRole('row').filter({ hasText: 'rdp' })
    .getByRole('button', { name: 'Watch' }).click();
  await moreFrames(page, 'rdp-live', 0);
  result.url = page.url();
  result.live = [];
  for (const p of (process.env.POSTERN_POINTS || '').split(';').filter(Boolean)) {
    const [x, y] = p.split(',').map(Number);
    result.live.push(await pixel(page, x, y, 'rdp-live'));
  }
}

try {
  context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    timeout: 60000,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(15000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base + '/');
  await page.getByLabel('User name', { exact: true }).fill('admin');
  await page.getByLabel('Password', { exact: true }).fill(process.env.POSTERN_PW);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('link', { name: 'Recordings', exact: true }).waitFor();
  if (process.env.POSTERN_LIVE) await live(page);
  else await recording(page);
  result.errors = errors;
  result.ok = errors.length === 0;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}
console.log('RESULT ' + JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
