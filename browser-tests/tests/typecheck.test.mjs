// tsc: herald.js checked from its JSDoc (--checkJs), herald.d.ts checked against code that uses it
// and against the implementation; and the classic-script build Herald serves loads as CommonJS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HeraldServer, freePort } from '../lib/server.mjs';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsc = path.join(dir, 'node_modules', 'typescript', 'bin', 'tsc');

function run(args) {
  const out = spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8' });
  return { status: out.status, output: `${out.stdout}${out.stderr}` };
}

test('tsc --checkJs: herald.js type-checks from its JSDoc', () => {
  const { status, output } = run([tsc, '-p', 'tsconfig.json']);
  assert.equal(status, 0, output);
});

test('tsc: herald.d.ts types real usage and matches the implementation', () => {
  mkdirSync(path.join(dir, '.tmp'), { recursive: true });
  copyFileSync(path.join(dir, '..', 'static', 'herald.js'), path.join(dir, '.tmp', 'herald-impl.js'));
  const { status, output } = run([tsc, '-p', 'tsconfig.usage.json']);
  assert.equal(status, 0, output);
});

test('the classic-script build served at /herald.umd.js loads as CommonJS', async () => {
  const server = new HeraldServer({ port: await freePort() });
  await server.start();
  try {
    const res = await fetch(`${server.url}/herald.umd.js`);
    assert.equal(res.status, 200);
    mkdirSync(path.join(dir, '.tmp'), { recursive: true });
    const file = path.join(dir, '.tmp', 'herald.umd.cjs');
    writeFileSync(file, await res.text());
    const exported = execFileSync(process.execPath, ['-e', `const H = require(${JSON.stringify(file)}); console.log(typeof H, typeof H.publish, H.TRANSPORTS.join())`], { encoding: 'utf8' });
    assert.equal(exported.trim(), 'function function eventsource,websocket,longpolling');
  } finally {
    await server.stop();
  }
});
