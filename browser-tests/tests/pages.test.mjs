// The demo page (/) and the dashboard (/dashboard) in headless Chromium, served by the real Herald
// binary with its default config. Screenshots go to browser-tests/screenshots/ (not committed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { HeraldServer, sleep } from '../lib/server.mjs';
import { launchBrowser, openPage, screenshot, screenshotDir } from '../lib/browser.mjs';

const DESKTOP = { width: 1280, height: 860 };
const NARROW = { width: 380, height: 800 };

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

/** Every form control has a label (an accessible name), and the page can be used by keyboard. */
async function assertLabelled(page) {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea, button')]
      .filter((el) => {
        if (el.type === 'hidden') return false;
        const labelled = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
        return !labelled && !(el.tagName === 'BUTTON' && el.textContent.trim());
      })
      .map((el) => el.outerHTML.slice(0, 120)),
  );
  assert.deepEqual(unlabelled, [], 'controls without a label');
}

/** Nothing sticks out sideways at this width. */
async function assertNoHorizontalScroll(page) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  assert.ok(scroll <= client + 1, `page is ${scroll}px wide in a ${client}px window`);
}

test('demo page: publishes from the browser and shows live messages on several channels', async () => {
  const page = await openPage(browser.context);
  await page.setViewportSize(DESKTOP);
  await page.goto(`${server.url}/`);
  await page.waitForFunction(() => window.herald?.status === 'open');
  assert.match(await page.locator('#transport-text').textContent(), /EventSource/);

  // Publish with the form, by keyboard: type, then Enter.
  await page.getByLabel('Your name').fill('Ada');
  await page.getByLabel('Channel', { exact: true }).selectOption('general');
  await page.getByLabel('Message', { exact: true }).fill('Hello from the browser');
  await page.getByLabel('Message', { exact: true }).press('Enter');
  const log = page.getByRole('log');
  await log.getByText('Hello from the browser').waitFor();
  await page.getByText('Sent to #general.').waitFor();
  assert.equal(await page.getByLabel('Message', { exact: true }).inputValue(), '');
  const stored = await server.json('/channels-stats?id=general');
  assert.equal(stored.published_messages, 1);

  // A message from outside (curl-like) on the other channel.
  await server.publish('random', 'plain text from curl');
  await log.getByText('plain text from curl').waitFor();

  // Join a third channel; its messages show up.
  await page.getByLabel('Join a channel').fill('news');
  await page.getByRole('button', { name: 'Join' }).click();
  await page.waitForFunction(() => window.herald.channels.includes('news') && window.herald.status === 'open');
  await server.publish('news', 'breaking');
  await log.getByText('breaking').waitFor();

  // Switch the transport: the message after the switch arrives over the new one, once.
  for (const [value, label] of [['websocket', 'WebSocket'], ['longpolling', 'long-polling'], ['auto', 'EventSource']]) {
    await page.getByLabel('Connect with').selectOption(value);
    await page.waitForFunction((label) => document.getElementById('transport-text').textContent.includes(label) && window.herald.status === 'open', label);
    await server.publish('general', `over ${value}`);
    await log.getByText(`over ${value}`).waitFor();
  }
  await sleep(300);
  const texts = await log.locator('li .message-text').allTextContents();
  assert.deepEqual(texts, [
    'Hello from the browser', 'plain text from curl', 'breaking', 'over websocket', 'over longpolling', 'over auto',
  ]);

  // Unchecking a channel stops it.
  await page.getByRole('checkbox', { name: '#random' }).uncheck();
  await page.waitForFunction(() => !window.herald.channels.includes('random') && window.herald.status === 'open');

  await assertLabelled(page);
  await screenshot(page, 'demo-desktop');
  await page.setViewportSize(NARROW);
  await sleep(200);
  await assertNoHorizontalScroll(page);
  await screenshot(page, 'demo-narrow');
  assert.deepEqual(page.problems, []);
  await page.close();
});

test('dashboard: summary, charts and channel table follow the server; publish, delete and watch work', async () => {
  // Some load: subscribers on several transports and a steady publisher.
  const loadPage = await openPage(browser.context);
  await loadPage.goto(`${server.url}/healthz`);
  await loadPage.evaluate(async () => {
    const { Herald } = await import('/herald.js');
    window.clients = [
      new Herald({ channels: ['load-1', 'load-2'], transports: ['eventsource'] }),
      new Herald({ channels: ['load-1'], transports: ['websocket'] }),
      new Herald({ channels: ['load-2', 'load-3'], transports: ['longpolling'] }),
    ];
  });
  let publishing = true;
  let paused = false;
  const publisher = (async () => {
    let n = 0;
    while (publishing) {
      if (!paused) await server.publish(`load-${(n % 3) + 1}`, `load message ${n++}`);
      await sleep(40);
    }
  })();

  try {
    const page = await openPage(browser.context);
    page.on('dialog', (dialog) => dialog.accept());
    await page.setViewportSize(DESKTOP);
    await page.goto(`${server.url}/dashboard`);
    await page.getByLabel('Refresh').selectOption('1000');
    await page.waitForFunction(() => window.dashboard.history.length >= 4, null, { timeout: 15_000 });

    // The summary matches /channels-stats (publishing paused, so that the numbers hold still and
    // every long-poll is waiting).
    paused = true;
    await page.getByLabel('Refresh').selectOption('0');
    await sleep(500);
    await page.evaluate(() => window.dashboard.refresh());
    await sleep(300);
    const summary = await server.json('/channels-stats');
    const card = async (key) => (await page.locator(`.card[data-key="${key}"] dd`).textContent()).replace(/,/g, '');
    assert.equal(await card('channels'), String(summary.channels));
    assert.equal(await card('subscribers'), String(summary.subscribers));
    assert.equal(summary.subscribers, 3); // connections: one per client, whatever its channels

    // The channel table: every channel with its subscribers and stored messages.
    const all = await server.json('/channels-stats?id=ALL');
    for (const info of all.infos.filter((c) => c.channel.startsWith('load-'))) {
      const row = page.locator(`tr[data-channel="${info.channel}"]`);
      await row.waitFor();
      const cells = await row.locator('td[data-key]').allTextContents();
      assert.equal(cells[0], String(info.subscribers), `${info.channel} subscribers`);
      assert.equal(cells[2].replace(/,/g, ''), String(info.stored_messages), `${info.channel} stored`);
    }
    paused = false;
    await page.getByLabel('Refresh').selectOption('1000');
    const samples = await page.evaluate(() => window.dashboard.history.length);
    await page.waitForFunction((n) => window.dashboard.history.length >= n + 2, samples);

    // Charts: a line for messages/s, deliveries/s, connections by transport and memory.
    for (const id of ['chart-published', 'chart-deliveries', 'chart-connections', 'chart-memory']) {
      assert.ok(await page.locator(`#${id} path.line`).count() >= 1, `${id} has a line`);
    }
    assert.match(await page.locator('#chart-connections-desc').textContent(), /EventSource 1.*WebSocket 1.*Long-polling/);
    assert.match(await page.locator('#legend-published').textContent(), /published: [1-9]/);
    const rss = await page.locator('.card[data-key="rss"] dd').textContent();
    assert.match(rss, /MiB/);

    // Publish with the form: the table shows the new channel with its stored message.
    await page.getByLabel('Channel', { exact: true }).fill('dash-test');
    await page.getByLabel('Message', { exact: true }).fill('from the dashboard');
    await page.getByRole('button', { name: 'Publish', exact: true }).click();
    await page.getByText('Published to dash-test (1 stored, 0 subscribers).').waitFor();
    const row = page.locator('tr[data-channel="dash-test"]');
    await row.waitFor();
    assert.equal((await row.locator('td[data-key]').allTextContents()).join('|'), '0|1|1');
    assert.equal((await server.json('/channels-stats?id=dash-test')).stored_messages, 1);

    // Search filters the table.
    await page.getByLabel('Search channels').fill('dash');
    await page.waitForFunction(() => document.querySelectorAll('#channel-rows tr').length === 1);
    assert.match(await page.locator('#table-caption').textContent(), /1 of \d+ channels match/);

    // Watch the channel live (herald.js): the last stored message, then new ones.
    await row.getByRole('button', { name: 'Watch dash-test' }).click();
    const watchLog = page.getByRole('log', { name: 'Live messages' });
    await watchLog.getByText('from the dashboard').waitFor();
    await server.publish('dash-test', 'live while watching', { 'Event-Type': 'note' });
    await page.waitForFunction(() => window.dashboard.watcher.status === 'open');
    await server.publish('dash-test', 'second live message');
    await watchLog.getByText('second live message').waitFor();
    await page.waitForFunction(() => document.querySelector('tr[data-channel="dash-test"] td[data-key="subscribers"]').textContent === '1');

    await assertLabelled(page);
    await page.getByLabel('Search channels').fill('');
    await sleep(1200);
    await screenshot(page, 'dashboard-desktop');
    await page.setViewportSize(NARROW);
    await sleep(1200);
    await assertNoHorizontalScroll(page);
    await screenshot(page, 'dashboard-narrow');
    await page.setViewportSize(DESKTOP);

    // Delete with the form (the confirmation is accepted): gone from the server and the table.
    await page.getByRole('button', { name: 'Stop watching dash-test' }).click();
    await page.getByLabel('Channel', { exact: true }).fill('dash-test');
    await page.getByRole('button', { name: 'Delete channel' }).click();
    await page.getByText('Deleted dash-test.').waitFor();
    const gone = await fetch(`${server.url}/channels-stats?id=dash-test`);
    assert.equal(gone.status, 404);
    await row.waitFor({ state: 'detached' });
    assert.deepEqual(page.problems, []);
    await page.close();
  } finally {
    publishing = false;
    await publisher;
    await loadPage.evaluate(() => window.clients.forEach((c) => c.close()));
    await loadPage.close();
  }
  console.log(`# screenshots: ${screenshotDir}`);
});

test('pages work with no network beyond the server: no request leaves the origin', async () => {
  const page = await openPage(browser.context);
  const origins = new Set();
  page.on('request', (req) => origins.add(new URL(req.url()).origin.replace(/^ws/, 'http')));
  await page.goto(`${server.url}/`);
  await page.waitForFunction(() => window.herald?.status === 'open');
  await page.goto(`${server.url}/dashboard`);
  await page.waitForFunction(() => window.dashboard.history.length >= 1);
  assert.deepEqual([...origins], [server.url]);
  assert.deepEqual(page.problems, []);
  await page.close();
});
