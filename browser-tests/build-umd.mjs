// Writes static/herald.umd.js (a classic-script / CommonJS / AMD build) from the ES module
// static/herald.js, with no bundler: the module has no imports, so its `export` keywords are removed
// and the code is wrapped in a UMD function. `node build-umd.mjs --check` exits 1 when the file on
// disk is out of date (the tests run it).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const source = path.join(root, 'static', 'herald.js');
const target = path.join(root, 'static', 'herald.umd.js');

export function buildUmd() {
  let code = readFileSync(source, 'utf8');
  if (/^\s*import\s/m.test(code)) throw new Error('herald.js must not import anything');
  code = code
    .replace(/^\/\/ @ts-check\n/, '')
    .replace(/^export default Herald;\n?/m, '')
    .replace(/^export (async function|function|class|const) /gm, '$1 ');
  if (/^export /m.test(code)) throw new Error('an export form build-umd.mjs does not know');
  const body = code
    .trimEnd()
    .split('\n')
    .map((line) => (line === '' ? '' : `  ${line}`))
    .join('\n');
  return `// GENERATED from herald.js by browser-tests/build-umd.mjs: edit herald.js, then run
// \`node browser-tests/build-umd.mjs\`.
//
// Classic-script build of herald.js: <script src="/herald.umd.js"></script> defines the global
// \`Herald\` (the class, with \`Herald.publish\` and \`Herald.TRANSPORTS\`); CommonJS and AMD get the same.
(function (root, factory) {
  'use strict';
  var api = factory();
  if (typeof define === 'function' && define.amd) define([], function () { return api; });
  else if (typeof module === 'object' && module.exports) module.exports = api;
  else root.Herald = api;
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this, function () {
  'use strict';
${body}

  Herald.Herald = Herald;
  Herald.publish = publish;
  Herald.TRANSPORTS = TRANSPORTS;
  Herald.default = Herald;
  return Herald;
});
`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const built = buildUmd();
  if (process.argv.includes('--check')) {
    const current = readFileSync(target, 'utf8');
    if (current !== built) {
      console.error('static/herald.umd.js is out of date: run node browser-tests/build-umd.mjs');
      process.exit(1);
    }
  } else {
    writeFileSync(target, built);
    console.log(`wrote ${path.relative(root, target)}`);
  }
}
