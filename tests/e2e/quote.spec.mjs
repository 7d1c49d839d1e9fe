// Browser tests of the quote page: Debian's chromium driven by playwright-core.
//
//   scripts/install-browser.sh
//   OSAGO_E2E_BASE_URL=http://127.0.0.1:8080 node --test tests/e2e/
//
// The page must be served (with its API) at OSAGO_E2E_BASE_URL.
import { test, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(HERE, 'artifacts');
const BASE_URL = (process.env.OSAGO_E2E_BASE_URL || '').replace(/\/+$/, '');
const CHROMIUM = process.env.OSAGO_E2E_CHROMIUM || '/usr/bin/chromium';
const RESULT_TIMEOUT = 90_000;

if (!BASE_URL) {
  throw new Error('set OSAGO_E2E_BASE_URL to the address of core-app, e.g. http://127.0.0.1:8080');
}
if (!fs.existsSync(CHROMIUM)) {
  throw new Error(`${CHROMIUM} is missing: run scripts/install-browser.sh`);
}

const TERMINAL = ['offer', 'declined', 'failed', 'expired'];

let userDataDir;
let context;
let page;
let consoleErrors;
let pageErrors;

before(async () => {
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'osago-e2e-chromium-'));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  // A persistent context is how playwright-core takes a --user-data-dir of our own
  // (it refuses --user-data-dir in args).
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 900 },
    locale: 'ru-RU',
    timezoneId: 'Europe/Moscow',
  });
});

after(async () => {
  await context?.close();
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
});

beforeEach(async () => {
  consoleErrors = [];
  pageErrors = [];
  page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const where = msg.location()?.url || '';
    // The browser asks for /favicon.ico by itself; the page has none.
    if (where.endsWith('/favicon.ico')) return;
    consoleErrors.push(where ? `${msg.text()} (${where})` : msg.text());
  });
  page.on('pageerror', (err) => pageErrors.push(err));
});

afterEach(async (t) => {
  const failed = pageErrors.length > 0;
  if (page && !page.isClosed()) {
    if (failed || consoleErrors.length) {
      const name = String(t.name).replace(/[^\w-]+/g, '_').slice(0, 60);
      await page.screenshot({ path: path.join(ARTIFACTS, `failure-${name}.png`), fullPage: true }).catch(() => {});
    }
    await page.close();
  }
  for (const text of consoleErrors) t.diagnostic(`browser console: ${text}`);
  assert.deepEqual(pageErrors.map((e) => e.stack || String(e)), [], 'uncaught errors in the page');
});

/** Console errors, less the ones a test caused on purpose (the 422 answer). */
function unexpectedConsoleErrors(allowed = []) {
  return consoleErrors.filter((text) => !allowed.some((re) => re.test(text)));
}

test('the prefilled form gets offers live, cheapest first, until complete', async () => {
  await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded' });
  const form = page.locator('[data-testid=quote-form]');
  await form.waitFor();

  const createdResponse = page.waitForResponse(
    (r) => r.url().endsWith('/api/v1/quotes') && r.request().method() === 'POST',
  );
  await page.click('[data-testid=submit]');
  const response = await createdResponse;
  assert.equal(response.status(), 201, `POST /api/v1/quotes answered ${response.status()}: ${await response.text()}`);
  const request = response.request();
  const sent = JSON.parse(request.postData());
  assert.match(request.headers()['idempotency-key'] || '', /^[0-9a-f-]{36}$/i, 'Idempotency-Key header');
  assert.equal(request.headers()['content-type'], 'application/json');
  const traceparent = request.headers().traceparent || '';
  assert.match(traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/, 'the page starts the quote\'s trace');
  assert.equal(response.headers()['x-trace-id'], traceparent.split('-')[1], 'core-app continues the page\'s trace');
  assert.equal(sent.vehicle.vin, 'XTAGFL110KY123456');
  assert.equal(typeof sent.vehicle.year, 'number');
  assert.equal(sent.drivers.length, 1);
  const created = await response.json();
  const insurerCount = created.insurers.length;
  assert.ok(insurerCount > 0, 'the quote went to at least one insurer');

  await page.waitForSelector('[data-testid=offer]', { timeout: RESULT_TIMEOUT });
  await page.waitForSelector('[data-testid=complete]', { state: 'visible', timeout: RESULT_TIMEOUT });
  assert.match(page.url(), new RegExp(`#quote=${created.id}$`), 'the address names the quote');
  assert.equal(await form.isVisible(), false, 'the form gives way to the results');

  const amounts = await page.$$eval('[data-testid=offer]', (rows) => rows.map((r) => Number(r.dataset.amount)));
  assert.ok(amounts.length >= 1);
  assert.ok(amounts.every(Number.isFinite), `offer amounts: ${amounts}`);
  assert.deepEqual(amounts, [...amounts].sort((a, b) => a - b), 'offers sorted by price, cheapest first');
  const firstPrice = await page.locator('[data-testid=offer]').first().locator('.offer__price').textContent();
  assert.match(firstPrice, /^\d{1,3}(?:[\s\u00a0\u202f]\d{3})*,\d{2}[\s\u00a0\u202f]₽$/, `Russian price format: ${firstPrice}`);

  const chips = await page.$$eval('[data-testid=insurer-chip]', (els) =>
    els.map((c) => ({ insurer: c.dataset.insurer, status: c.dataset.status })));
  assert.equal(chips.length, insurerCount, 'one status chip per insurer of the quote');
  assert.deepEqual(chips.map((c) => c.insurer).sort(), [...created.insurers].sort());
  for (const chip of chips) assert.ok(TERMINAL.includes(chip.status), `terminal status for ${chip.insurer}: ${chip.status}`);
  const offerInsurers = await page.$$eval('[data-testid=offer]', (rows) => rows.map((r) => r.dataset.insurer));
  assert.deepEqual(offerInsurers.sort(), chips.filter((c) => c.status === 'offer').map((c) => c.insurer).sort());

  const progress = await page.locator('[data-testid=progress]').textContent();
  assert.match(progress, new RegExp(`${insurerCount}\\s+из\\s+${insurerCount}`), `progress: ${progress}`);

  // The breakdown opens and shows the tariff formula.
  await page.locator('[data-testid=offer] summary').first().click();
  const formula = await page.locator('[data-testid=offer] .formula').first().textContent();
  assert.match(formula, /ТБ × КТ × КБМ × КВС × КО × КМ × КС × КН × КП/);

  await page.screenshot({ path: path.join(ARTIFACTS, 'quote-complete.png'), fullPage: true });
  assert.deepEqual(unexpectedConsoleErrors(), [], 'no errors in the browser console');
});

test('invalid VIN and a too young driver are shown inline, with a summary', async () => {
  await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('[data-testid=quote-form]');

  // A driver who turns 17 on the policy start date, licensed at 16: only the age is wrong.
  const start = await page.inputValue('[data-field="policy.start_date"]');
  const [y, m, d] = start.split('-').map(Number);
  const iso = (yy, mm, dd) => `${yy}-${String(mm).padStart(2, '0')}-${String(dd).padStart(2, '0')}`;
  const day = Math.min(d, 28);
  await page.fill('[data-field="vehicle.vin"]', 'XTAGFL110KY12345O'); // O is not allowed in a VIN
  await page.fill('[data-field="drivers[0].birth_date"]', iso(y - 17, m, day));
  await page.fill('[data-field="drivers[0].experience_since"]', iso(y - 1, m, day));

  const answered = page.waitForResponse((r) => r.url().endsWith('/api/v1/quotes') && r.request().method() === 'POST');
  await page.click('[data-testid=submit]');
  const response = await answered;
  assert.equal(response.status(), 422);
  const problem = await response.json();
  const fields = problem.errors.map((e) => e.field);
  assert.ok(fields.includes('vehicle.vin'), `422 names vehicle.vin: ${fields}`);
  assert.ok(fields.includes('drivers[0].birth_date'), `422 names drivers[0].birth_date: ${fields}`);

  const summary = page.locator('[data-testid=error-summary]');
  await summary.waitFor({ state: 'visible' });
  assert.ok((await summary.locator('li').count()) >= 2, 'the summary lists every error');

  const errorOf = (field) => page.locator(`.field:has([data-field="${field}"]) .field-error`);
  await errorOf('vehicle.vin').waitFor({ state: 'visible' });
  await errorOf('drivers[0].birth_date').waitFor({ state: 'visible' });
  assert.equal(await page.getAttribute('[data-field="vehicle.vin"]', 'aria-invalid'), 'true');
  assert.equal(await page.getAttribute('[data-field="drivers[0].birth_date"]', 'aria-invalid'), 'true');
  assert.match(await errorOf('vehicle.vin').textContent(), /VIN/);

  const focused = await page.evaluate(() => document.activeElement?.getAttribute('data-field'));
  assert.equal(focused, problem.errors[0].field, 'the first invalid field has the focus');

  assert.equal(await page.locator('[data-testid=offers]').isVisible(), false, 'no results view');
  assert.equal(await page.locator('[data-testid=quote-form]').isVisible(), true);
  assert.ok(!page.url().includes('#quote='), 'no quote in the address');

  await page.screenshot({ path: path.join(ARTIFACTS, 'quote-invalid.png'), fullPage: true });
  // Chromium logs the failed (422) fetch itself; anything else is a bug.
  assert.deepEqual(unexpectedConsoleErrors([/status of 422/]), [], 'no unexpected console errors');
});
