// README's "In the browser" example, run verbatim in headless Chromium against the real binary with
// its default config: it must print the message it publishes (it once published before joining and
// closed at once, so it never showed one).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { HeraldServer, repoRoot, sleep } from '../lib/server.mjs';
import { launchBrowser, openPage } from '../lib/browser.mjs';

let server;
let browser;

before(async () => {
  server = await new HeraldServer().start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The first ```js block of README.md's "In the browser" section, as written. */
function readmeSnippet() {
  const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## In the browser'));
  const match = section.match(/```js\n([\s\S]*?)```/);
  assert.ok(match, 'README has a js block in "In the browser"');
  return match[1];
}

test("README's browser example shows the message it publishes", async () => {
  const page = await openPage(browser.context);
  const lines = [];
  page.on('console', (msg) => lines.push(msg.text()));
  await page.goto(`${server.url}/`);
  await page.addScriptTag({ type: 'module', content: readmeSnippet() });
  const deadline = Date.now() + 15_000;
  while (!lines.some((l) => l.startsWith('news 1 hello')) && Date.now() < deadline) await sleep(50);
  assert.ok(
    lines.some((l) => l.startsWith('news 1 hello')),
    `console of the README example:\n${lines.join('\n')}\nserver log:\n${server.log.slice(-2000)}`,
  );
  assert.ok(lines.some((l) => l.startsWith('open ')), lines.join('\n'));
  // It closes after the first message.
  while (!lines.some((l) => l.startsWith('closed')) && Date.now() < deadline) await sleep(50);
  assert.ok(lines.some((l) => l.startsWith('closed')), lines.join('\n'));
  assert.deepEqual(page.problems, [], 'no console errors, page errors or failed requests');
  await page.close();
});
