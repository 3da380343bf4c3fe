// Debian's headless Chromium (/usr/bin/chromium, never a downloaded browser) driven by
// playwright-core, with a fresh profile directory per launch.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './server.mjs';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const screenshotDir = path.join(repoRoot, 'browser-tests', 'screenshots');

export async function launchBrowser() {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'herald-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-dev-shm-usage',
    ],
    viewport: { width: 1280, height: 800 },
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Opens a page and records console errors, page errors and failed requests (read `page.problems`).
 * @param {import('playwright-core').BrowserContext} context
 */
export async function openPage(context, { allowFailedRequests = false } = {}) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  if (!allowFailedRequests) {
    page.on('requestfailed', (req) => {
      const failure = req.failure()?.errorText || '';
      // Connections herald.js closes on purpose (reconnects, close()) are aborted, not failed.
      if (!/ERR_ABORTED/.test(failure)) problems.push(`request failed: ${req.url()} ${failure}`);
    });
  }
  page.problems = problems;
  return page;
}

export async function screenshot(page, name) {
  mkdirSync(screenshotDir, { recursive: true });
  const file = path.join(screenshotDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
