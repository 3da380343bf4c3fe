// herald.js in headless Chromium against the real Herald binary with its default config.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HeraldServer, repoRoot, sleep } from '../lib/server.mjs';
import { Proxy } from '../lib/proxy.mjs';
import { launchBrowser, openPage } from '../lib/browser.mjs';
import { startClient, waitForStatus, waitForMessages, record, call } from '../lib/client.mjs';

const TRANSPORTS = ['eventsource', 'websocket', 'longpolling'];
const FAST = { initial: 150, max: 600, factor: 2, jitter: 0.5 };

let server;
let browser;
let pages = [];
let unique = 0;

/** A channel name no other test uses. */
const channel = (name) => `${name}-${process.pid}-${++unique}`;

before(async () => {
  server = await new HeraldServer().start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

afterEach(async () => {
  for (const page of pages) {
    await page.evaluate(() => window.__herald?.herald.close()).catch(() => {});
    await page.close().catch(() => {});
  }
  pages = [];
});

async function newPage(options) {
  const page = await openPage(browser.context, options);
  pages.push(page);
  return page;
}

function assertNoProblems(page) {
  assert.deepEqual(page.problems, [], 'no console errors, page errors or failed requests');
}

/** The (channel, text) pairs received, in order. */
const texts = (rec, ch) => rec.messages.filter((m) => !ch || m.channel === ch).map((m) => m.text);

for (const transport of TRANSPORTS) {
  test(`receives messages over ${transport} with channel, id, event id and type, time and tag`, async () => {
    const page = await newPage();
    const [a, b] = [channel('a'), channel('b')];
    await startClient(page, server.url, {
      channels: [a, b],
      transports: [transport],
      eventTypes: ['score'],
    });
    await waitForStatus(page, 'open', transport);
    await server.publish(a, 'plain');
    await server.publish(b, 'quote " backslash \\ line\nbreak, ünïcødé ✓', { 'Event-Id': 'e-42', 'Event-Type': 'score' });
    await server.publish(a, 'second');
    await waitForMessages(page, 3);
    const rec = await record(page);
    assert.equal(rec.transport, transport);
    assert.deepEqual(texts(rec, a), ['plain', 'second']);
    const typed = rec.messages.find((m) => m.channel === b);
    assert.equal(typed.text, 'quote " backslash \\ line\nbreak, ünïcødé ✓');
    assert.equal(typed.id, 1);
    assert.equal(typed.eventId, 'e-42');
    assert.equal(typed.eventType, 'score');
    assert.equal(typed.transport, transport);
    assert.match(typed.time, /^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/);
    assert.equal(typeof typed.tag, 'number');
    const first = rec.messages.find((m) => m.text === 'plain');
    assert.equal(first.id, 1);
    assert.equal(first.eventId, null);
    assert.equal(first.eventType, null);
    assert.deepEqual(
      rec.statuses.map((s) => s.status),
      ['connecting', 'open'],
    );
    assertNoProblems(page);
  });
}

test('falls back to WebSocket when EventSource is unavailable, then to long-polling without WebSocket', async () => {
  const page = await newPage();
  await page.addInitScript(() => {
    // @ts-ignore
    window.EventSource = undefined;
  });
  const ch = channel('fallback');
  await startClient(page, server.url, { channels: [ch] });
  await waitForStatus(page, 'open', 'websocket');
  await server.publish(ch, 'over ws');
  await waitForMessages(page, 1);
  await page.evaluate(() => window.__herald.herald.close());

  const page2 = await newPage();
  await page2.addInitScript(() => {
    // @ts-ignore
    window.EventSource = undefined;
    // @ts-ignore
    window.WebSocket = undefined;
  });
  await startClient(page2, server.url, { channels: [ch] });
  await waitForStatus(page2, 'open', 'longpolling');
  await server.publish(ch, 'over long-polling');
  await waitForMessages(page2, 1);
  const rec = await record(page2);
  assert.deepEqual(texts(rec), ['over long-polling']);
  assert.equal(rec.messages[0].transport, 'longpolling');
  assertNoProblems(page);
  assertNoProblems(page2);
});

test('EventSource: a message with an Event-Type not in eventTypes is not lost (switches to WebSocket)', async () => {
  const page = await newPage();
  const ch = channel('typed');
  await startClient(page, server.url, { channels: [ch], eventTypes: ['known'] });
  await waitForStatus(page, 'open', 'eventsource');
  await server.publish(ch, 'one');
  await server.publish(ch, 'two', { 'Event-Type': 'known' });
  await waitForMessages(page, 2);
  await server.publish(ch, 'three', { 'Event-Type': 'unknown' });
  await server.publish(ch, 'four');
  await waitForMessages(page, 4);
  await server.publish(ch, 'five', { 'Event-Type': 'unknown' });
  await waitForMessages(page, 5);
  await sleep(200);
  const rec = await record(page);
  assert.deepEqual(texts(rec), ['one', 'two', 'three', 'four', 'five']);
  assert.deepEqual(rec.messages.map((m) => m.eventType), [null, 'known', 'unknown', null, 'unknown']);
  assert.equal(rec.transport, 'websocket');
  assert.ok(rec.errors.some((e) => /missed message 3/.test(e)), rec.errors.join('\n'));
  assertNoProblems(page);
});

test('falls back when a transport fails on this server (blocked EventSource location)', async () => {
  const page = await newPage({ allowFailedRequests: true });
  const ch = channel('blocked');
  // The EventSource location does not exist here (404): EventSource fails, WebSocket takes over.
  await startClient(page, server.url, {
    channels: [ch],
    paths: { eventsource: 'no-such-location/' },
    backoff: FAST,
  });
  await waitForStatus(page, 'open', 'websocket');
  await server.publish(ch, 'after fallback');
  await waitForMessages(page, 1);
  const rec = await record(page);
  assert.equal(rec.messages[0].transport, 'websocket');
  assert.ok(rec.errors.some((e) => e.startsWith('eventsource:')), rec.errors.join('\n'));
  assert.deepEqual(
    rec.statuses.map((s) => `${s.status}/${s.transport}`),
    ['connecting/eventsource', 'connecting/websocket', 'open/websocket'],
  );
});

for (const transport of TRANSPORTS) {
  test(`${transport}: after a network drop, messages published during the backoff arrive exactly once`, async () => {
    const proxy = await new Proxy(server.port).start();
    try {
      const page = await newPage({ allowFailedRequests: true });
      const [busy, quiet, silent] = [channel('busy'), channel('quiet'), channel('silent')];
      await startClient(page, proxy.url, {
        channels: [busy, quiet, silent],
        transports: [transport],
        backoff: { initial: 700, max: 1500, factor: 2, jitter: 0.2 },
      });
      await waitForStatus(page, 'open', transport);
      const expected = { [busy]: [], [quiet]: [], [silent]: [] };
      const send = async (ch, text) => {
        await server.publish(ch, text);
        expected[ch].push(text);
      };
      await send(quiet, 'q1');
      for (let i = 1; i <= 5; i++) await send(busy, `b${i}`);
      await waitForMessages(page, 6);

      // The network goes away: every connection is cut and new ones are refused.
      await proxy.cut();
      await waitForStatus(page, 'reconnecting');
      for (let i = 6; i <= 12; i++) await send(busy, `b${i}`);
      await send(silent, 's1'); // a channel that had delivered nothing before the drop
      await send(quiet, 'q2');
      await sleep(300);
      await proxy.restore();
      await waitForStatus(page, 'open', transport, 15_000);
      for (let i = 13; i <= 15; i++) await send(busy, `b${i}`);
      await send(quiet, 'q3');
      await waitForMessages(page, 15, busy);
      await waitForMessages(page, 3, quiet);
      await waitForMessages(page, 1, silent);
      await sleep(300); // any duplicate would have arrived by now
      const rec = await record(page);
      for (const ch of [busy, quiet, silent]) assert.deepEqual(texts(rec, ch), expected[ch], ch);
      const ids = rec.messages.filter((m) => m.channel === busy).map((m) => m.id);
      assert.deepEqual(ids, Array.from({ length: 15 }, (_, i) => i + 1));
      const statuses = rec.statuses.map((s) => s.status);
      assert.ok(statuses.includes('reconnecting'), statuses.join());
      assert.equal(statuses.at(-1), 'open');
    } finally {
      await proxy.stop();
    }
  });
}

test('resumes after the server restarts on the same port: nothing lost, nothing repeated', async () => {
  const own = await new HeraldServer().start();
  try {
    const page = await newPage({ allowFailedRequests: true });
    const ch = channel('restart');
    await startClient(page, own.url, { channels: [ch], backoff: FAST });
    await waitForStatus(page, 'open', 'eventsource');
    for (let i = 1; i <= 3; i++) await own.publish(ch, `before ${i}`);
    await waitForMessages(page, 3);
    // Down for over a second, so that the new process's (time, tag) is past the old one's.
    await own.restart(1100);
    await waitForStatus(page, 'open', 'eventsource', 15_000);
    for (let i = 1; i <= 3; i++) await own.publish(ch, `after ${i}`);
    await waitForMessages(page, 6);
    await sleep(300);
    const rec = await record(page);
    assert.deepEqual(texts(rec), ['before 1', 'before 2', 'before 3', 'after 1', 'after 2', 'after 3']);
    assert.ok(rec.statuses.some((s) => s.status === 'reconnecting'));
  } finally {
    await own.stop();
  }
});

test('addChannel and removeChannel reconnect without losing or repeating messages', async () => {
  const page = await newPage();
  const [a, b, c] = [channel('a'), channel('b'), channel('c')];
  await startClient(page, server.url, { channels: [a] });
  await waitForStatus(page, 'open', 'eventsource');
  await server.publish(a, 'a1');
  await waitForMessages(page, 1);

  await call(page, 'addChannel', b);
  await call(page, 'addChannel', c);
  // Published while the client reconnects with b and c.
  await server.publish(a, 'a2');
  await waitForStatus(page, 'open');
  await server.publish(b, 'b1');
  await server.publish(c, 'c1');
  await server.publish(a, 'a3');
  await waitForMessages(page, 5);
  assert.deepEqual((await record(page)).channels, [a, b, c]);

  await call(page, 'removeChannel', b);
  await server.publish(a, 'a4');
  await waitForStatus(page, 'open');
  await server.publish(b, 'b2 (not wanted)');
  await server.publish(c, 'c2');
  await waitForMessages(page, 2, c);
  await sleep(300);
  const rec = await record(page);
  assert.deepEqual(rec.channels, [a, c]);
  assert.deepEqual(texts(rec, a), ['a1', 'a2', 'a3', 'a4']);
  assert.deepEqual(texts(rec, b), ['b1']);
  assert.deepEqual(texts(rec, c), ['c1', 'c2']);
  assertNoProblems(page);
});

test('status events: connecting, open, reconnecting, open, closed; nothing after close()', async () => {
  const proxy = await new Proxy(server.port).start();
  try {
    const page = await newPage({ allowFailedRequests: true });
    const ch = channel('status');
    await startClient(page, proxy.url, { channels: [ch], transports: ['websocket'], backoff: FAST });
    await waitForStatus(page, 'open');
    await proxy.cut();
    await waitForStatus(page, 'reconnecting');
    await proxy.restore();
    await waitForStatus(page, 'open', 'websocket', 15_000);
    await call(page, 'close');
    await server.publish(ch, 'after close');
    await sleep(300);
    const rec = await record(page);
    const statuses = rec.statuses.map((s) => s.status);
    assert.deepEqual(statuses.slice(0, 3), ['connecting', 'open', 'reconnecting']);
    assert.deepEqual(statuses.slice(-3), ['connecting', 'open', 'closed']);
    const reconnecting = rec.statuses.find((s) => s.status === 'reconnecting');
    assert.ok(reconnecting.delay > 0 && reconnecting.delay <= FAST.max, JSON.stringify(reconnecting));
    assert.equal(rec.status, 'closed');
    assert.deepEqual(rec.messages, []);
  } finally {
    await proxy.stop();
  }
});

test('setTransports switches the transport and resumes where the previous one stopped', async () => {
  const page = await newPage();
  const ch = channel('switch');
  await startClient(page, server.url, { channels: [ch] });
  await waitForStatus(page, 'open', 'eventsource');
  let n = 0;
  for (const transport of ['websocket', 'longpolling', 'eventsource']) {
    await server.publish(ch, `m${++n}`);
    await call(page, 'setTransports', [transport]);
    await server.publish(ch, `m${++n}`);
    await waitForStatus(page, 'open', transport);
    await server.publish(ch, `m${++n}`);
    await waitForMessages(page, n);
  }
  await sleep(300);
  const rec = await record(page);
  assert.deepEqual(texts(rec), Array.from({ length: n }, (_, i) => `m${i + 1}`));
  assertNoProblems(page);
});

test('backtrack delivers the last N stored messages first, once', async () => {
  const page = await newPage();
  const ch = channel('backtrack');
  for (let i = 1; i <= 5; i++) await server.publish(ch, `old ${i}`);
  await startClient(page, server.url, { channels: [ch], backtrack: 2, transports: ['websocket'] });
  await waitForMessages(page, 2);
  await server.publish(ch, 'new');
  await waitForMessages(page, 3);
  await call(page, 'reconnect');
  await waitForStatus(page, 'open');
  await server.publish(ch, 'newer');
  await waitForMessages(page, 4);
  await sleep(300);
  assert.deepEqual(texts(await record(page)), ['old 4', 'old 5', 'new', 'newer']);
});

test('a deleted channel is reported and joined again', async () => {
  const page = await newPage({ allowFailedRequests: true });
  const [ch, other] = [channel('deleted'), channel('other')];
  await startClient(page, server.url, { channels: [ch, other], backoff: FAST });
  await waitForStatus(page, 'open');
  await server.publish(ch, 'before delete');
  await waitForMessages(page, 1);
  const res = await fetch(`${server.url}/pub?id=${ch}`, { method: 'DELETE' });
  assert.equal(res.status, 200);
  await page.waitForFunction(() => window.__herald.rec.deleted.length === 1);
  await waitForStatus(page, 'open');
  await sleep(200);
  await server.publish(ch, 'after delete');
  await server.publish(other, 'other');
  await waitForMessages(page, 3);
  const rec = await record(page);
  assert.deepEqual(rec.deleted.map((d) => d.channel), [ch]);
  assert.deepEqual(texts(rec, ch), ['before delete', 'after delete']);
});

test('publish with an idempotencyKey: a repeated call publishes once', async () => {
  const page = await newPage();
  const ch = channel('idempotent');
  await page.goto(`${server.url}/healthz`);
  const infos = await page.evaluate(async (ch) => {
    const { publish } = await import('/herald.js');
    const first = await publish('/pub', ch, 'once', { idempotencyKey: 'order-42' });
    const again = await publish('/pub', ch, 'once', { idempotencyKey: 'order-42' });
    const other = await publish('/pub', ch, 'twice', { idempotencyKey: 'order-43' });
    return [first, again, other].map((i) => i.published_messages);
  }, ch);
  assert.deepEqual(infos, [1, 1, 2]);
  assertNoProblems(page);
});

test('the classic-script build (herald.umd.js) defines window.Herald', async () => {
  const page = await newPage();
  const ch = channel('umd');
  await startClient(page, server.url, { channels: [ch], transports: ['longpolling'] }, { umd: true });
  await waitForStatus(page, 'open', 'longpolling');
  await server.publish(ch, 'via umd');
  await waitForMessages(page, 1);
  assert.deepEqual(texts(await record(page)), ['via umd']);
  assert.equal(await page.evaluate(() => typeof window.Herald.publish), 'function');
  assertNoProblems(page);
});

test('params: a token for locations that want a signed JWT (every transport)', async () => {
  // The default config plus the client locations again under /secure/, each with jwt_secret.
  const secret = 'browser-tests-secret-0123456789';
  const base = readFileSync(path.join(repoRoot, 'config', 'herald.toml'), 'utf8');
  const client = base.slice(base.indexOf('[[location]]\npath = "/client/ev/"'), base.indexOf('# Statistics'));
  const secure = client.replaceAll('path = "/client/', 'path = "/secure/').replaceAll('role = "subscriber"', `role = "subscriber"\njwt_secret = "${secret}"`);
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'herald-jwt-')), 'herald.toml');
  writeFileSync(file, `${base}\n${secure}`);
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const sign = (claims) => {
    const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
    return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
  };
  const own = await new HeraldServer({ config: file }).start();
  try {
    for (const transport of TRANSPORTS) {
      const page = await newPage();
      const ch = channel(`jwt-${transport}`);
      await startClient(page, own.url, {
        url: '/secure/',
        channels: [ch],
        transports: [transport],
        params: { token: sign({ channels: [ch], exp: Math.floor(Date.now() / 1000) + 600 }) },
      });
      await waitForStatus(page, 'open', transport);
      await own.publish(ch, `signed ${transport}`);
      await waitForMessages(page, 1);
      assert.deepEqual(texts(await record(page)), [`signed ${transport}`]);
      assertNoProblems(page);
    }
    // A token for another channel is refused: no message, an error, and retries.
    const page = await newPage({ allowFailedRequests: true });
    const ch = channel('jwt-refused');
    await startClient(page, own.url, {
      url: '/secure/',
      channels: [ch],
      transports: ['websocket'],
      params: { token: sign({ channels: ['something-else'] }) },
      backoff: FAST,
    });
    await waitForStatus(page, 'reconnecting');
    await own.publish(ch, 'not for you');
    await sleep(300);
    const rec = await record(page);
    assert.deepEqual(rec.messages, []);
    assert.ok(rec.errors.some((e) => /403/.test(e)), rec.errors.join('\n'));
  } finally {
    await own.stop();
  }
});
