// Helpers to run herald.js inside a page: the page is a same-origin document of the server (or the
// proxy), herald.js is loaded with a dynamic import, and what it emits is recorded in window.__herald.

/**
 * Opens `origin`/healthz (any same-origin document will do) and starts a Herald there.
 * @param {import('playwright-core').Page} page
 * @param {string} origin
 * @param {object} options Herald options (JSON-serialisable)
 * @param {{umd?: boolean}} [how]
 */
export async function startClient(page, origin, options, how = {}) {
  if (!page.url().startsWith(origin)) await page.goto(`${origin}/healthz`);
  await page.evaluate(
    async ({ options, umd }) => {
      let HeraldClass;
      if (umd) {
        await new Promise((resolve, reject) => {
          const script = document.createElement('script');
          script.src = '/herald.umd.js';
          script.onload = resolve;
          script.onerror = reject;
          document.head.append(script);
        });
        HeraldClass = /** @type {any} */ (window).Herald;
      } else {
        ({ Herald: HeraldClass } = await import('/herald.js'));
      }
      const rec = { messages: [], statuses: [], errors: [], deleted: [] };
      const herald = new HeraldClass(options);
      herald.on('message', (m) => rec.messages.push(m));
      herald.on('status', (s) => rec.statuses.push(s));
      herald.on('error', (e) => rec.errors.push(`${e.transport}: ${e.error.message}`));
      herald.on('deleted', (d) => rec.deleted.push(d));
      /** @type {any} */ (window).__herald = { herald, rec };
    },
    { options, umd: !!how.umd },
  );
}

/** Waits until the client's status is `status` (and optionally on `transport`). */
export async function waitForStatus(page, status, transport, timeout = 10_000) {
  await page.waitForFunction(
    ({ status, transport }) => {
      const { herald } = window.__herald;
      return herald.status === status && (!transport || herald.transport === transport);
    },
    { status, transport },
    { timeout },
  );
}

/** Waits until `count` messages were received (optionally on one channel). */
export async function waitForMessages(page, count, channel, timeout = 10_000) {
  await page.waitForFunction(
    ({ count, channel }) =>
      window.__herald.rec.messages.filter((m) => !channel || m.channel === channel).length >= count,
    { count, channel },
    { timeout },
  );
}

export async function record(page) {
  return page.evaluate(() => {
    const { herald, rec } = window.__herald;
    return { ...rec, status: herald.status, transport: herald.transport, channels: herald.channels };
  });
}

export async function call(page, method, ...args) {
  return page.evaluate(
    ({ method, args }) => {
      const { herald } = window.__herald;
      const result = herald[method](...args);
      return result === herald ? undefined : result;
    },
    { method, args },
  );
}
