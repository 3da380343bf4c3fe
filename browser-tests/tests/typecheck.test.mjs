// tsc: herald.js checked from its JSDoc (--checkJs), herald.d.ts checked against code that uses it
// and against the implementation; and the classic-script build is up to date with herald.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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

test('static/herald.umd.js is generated from the current herald.js', () => {
  const { status, output } = run(['build-umd.mjs', '--check']);
  assert.equal(status, 0, output);
  // And it loads as CommonJS.
  const exported = execFileSync(process.execPath, ['-e', `const H = require(${JSON.stringify(path.join(dir, '..', 'static', 'herald.umd.js'))}); console.log(typeof H, typeof H.publish, H.TRANSPORTS.join())`], { encoding: 'utf8' });
  assert.equal(exported.trim(), 'function function eventsource,websocket,longpolling');
});
