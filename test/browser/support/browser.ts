import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const CONSOLE_SRC = join(ROOT, 'console');
const CONSOLE_OUT = join(ROOT, 'dist/console');
const BUILD_MARKER = join(CONSOLE_OUT, '.vite/manifest.json');
export const SCREENSHOTS = join(ROOT, 'docs/screenshots');

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/**
 * The service serves the console from dist/console (npm run build makes it). A fresh clone
 * running `npm test` without a build, or sources edited since the last build, get a build
 * here, so the browser always drives the current console.
 */
export function ensureConsoleBuilt(): void {
  if (existsSync(BUILD_MARKER) && statSync(BUILD_MARKER).mtimeMs >= newestMtime(CONSOLE_SRC)) return;
  execFileSync(process.execPath, [join(ROOT, 'node_modules/vite/bin/vite.js'), 'build', '--config', join(CONSOLE_SRC, 'vite.config.ts'), '--logLevel', 'warn'], {
    cwd: ROOT,
    stdio: 'inherit',
    timeout: 120_000,
  });
}

export interface Browser {
  context: BrowserContext;
  /** Console errors and CSP violations seen on any page (a CSP that blocks the app shows here). */
  errors: string[];
  close(): Promise<void>;
}

/** Headless Chromium on a fresh user-data-dir, removed on close. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  const userDataDir = mkdtempSync(join(tmpdir(), 'refund-console-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1366, height: 900 },
    acceptDownloads: true,
    timezoneId: 'UTC',
    locale: 'en-GB',
  });
  const errors: string[] = [];
  const watch = (page: Page) => {
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(`${msg.text()} (${msg.location().url})`);
    });
    page.on('pageerror', (err) => errors.push(err.message));
  };
  context.pages().forEach(watch);
  context.on('page', watch);
  return {
    context,
    errors,
    async close() {
      await context.close().catch(() => undefined);
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Opens the console in a new tab (its own sessionStorage) and signs in with `key`. */
export async function signIn(browser: Browser, baseUrl: string, key: string): Promise<Page> {
  const page = await browser.context.newPage();
  await page.goto(`${baseUrl}/console/`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('who').waitFor();
  return page;
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/**
 * Waits for the outcome of an action button ("<Label> accepted" or "<Label> refused") and
 * fails with what the page showed when it was refused, so a failure names its cause.
 */
export async function actionAccepted(page: Page, label: string): Promise<void> {
  const outcome = page.getByText(new RegExp(`^${label} (accepted|refused)`));
  try {
    await outcome.first().waitFor({ timeout: 30_000 });
  } catch (err) {
    const shown = await page.locator('.outcome').textContent().catch(() => '?');
    const buttons = await page.locator('button[data-action]').evaluateAll((bs) => bs.map((b) => `${b.textContent}${b.hasAttribute('disabled') ? ' (disabled)' : ''}`)).catch(() => []);
    throw new Error(`no outcome of ${label} within 30 s; the page shows "${shown}", buttons ${JSON.stringify(buttons)}: ${(err as Error).message}`);
  }
  const text = (await page.locator('.outcome').textContent()) ?? '';
  if (!text.startsWith(`${label} accepted`)) throw new Error(`${label} was refused: ${text}`);
}
