// The console's RDP player in real Chromium (headless), driven by tests/rdp_recording.rs, which starts the
// server, writes an RDP recording and passes:
//   POSTERN_URL        https://127.0.0.1:PORT
//   POSTERN_PW         the admin's password
//   POSTERN_RECORDING  the recording's id (a desktop that is red, then green in its top-left quarter)
//   CHROMIUM           browser binary (default /usr/bin/chromium)
// Prints one line `RESULT {json}` at the end; exits non-zero on failure.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.env.POSTERN_URL;
const id = process.env.POSTERN_RECORDING;
const result = { ok: false, pixels: {} };
const dir = mkdtempSync(join(tmpdir(), 'postern-chromium-'));
let context;

// The colour of the shown frame's pixel (x, y) (the player draws frames on a canvas).
async function pixel(page, x, y) {
  return page.evaluate(([x, y]) => {
    const c = document.querySelector('[data-testid=rdp-frame]');
    return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
  }, [x, y]);
}

const frames = (page) => page.evaluate(() => Number(document.querySelector('[data-testid=rdp-frame]')?.dataset.frames || 0));

async function frameChange(page, before) {
  await page.waitForFunction((b) => Number(document.querySelector('[data-testid=rdp-frame]')?.dataset.frames || 0) > b,
    before, { timeout: 15000 });
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
  await page.goto(base + '/recordings/' + id);
  const frame = page.getByTestId('rdp-frame');
  await frameChange(page, 0);
  // It plays by itself to the end, where the top-left quarter is green.
  await page.getByTestId('rdp-play').filter({ hasText: 'Play' }).waitFor({ timeout: 20000 });
  result.pixels.end = await pixel(page, 10, 10);
  result.time_end = await page.getByTestId('rdp-time').textContent();
  // Seek back to 1 s: red everywhere.
  const before = await frames(page);
  await page.getByTestId('rdp-seek').fill('1');
  await frameChange(page, before);
  result.pixels.start = await pixel(page, 10, 10);
  result.pixels.start_far = await pixel(page, 150, 110);
  result.time_start = await page.getByTestId('rdp-time').textContent();
  result.width = await frame.evaluate((c) => c.width);
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
