//! Build script: writes the classic-script (UMD) build of the browser client, `herald.umd.js`, into
//! `OUT_DIR` from `static/herald.js`, so the repository holds one source of the client. The module
//! has no imports, so its `export` keywords are dropped and the code is wrapped in a UMD function.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=static/herald.js");
    let source = std::fs::read_to_string("static/herald.js")
        .unwrap_or_else(|e| panic!("cannot read static/herald.js: {e}"));
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|e| panic!("OUT_DIR: {e}"));
    let target = Path::new(&out_dir).join("herald.umd.js");
    std::fs::write(&target, umd(&source))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
}

/// The UMD build of the ES module `source`.
fn umd(source: &str) -> String {
    let mut body = String::new();
    for line in source.lines() {
        if line == "// @ts-check" || line == "export default Herald;" {
            continue;
        }
        assert!(
            !line.trim_start().starts_with("import "),
            "static/herald.js must not import anything: {line}"
        );
        let line = match line.strip_prefix("export ") {
            Some(rest)
                if ["async function ", "function ", "class ", "const "]
                    .iter()
                    .any(|form| rest.starts_with(form)) =>
            {
                rest
            }
            Some(_) => panic!("an export form build.rs does not know: {line}"),
            None => line,
        };
        if line.is_empty() {
            body.push('\n');
        } else {
            let _ = writeln!(body, "  {line}");
        }
    }
    const WRAPPER: &str = r#"// Classic-script build of herald.js, made from it when Herald is built (build.rs):
// <script src="/herald.umd.js"></script> defines the global `Herald` (the class, with
// `Herald.publish` and `Herald.TRANSPORTS`); CommonJS and AMD get the same.
(function (root, factory) {
  'use strict';
  var api = factory();
  if (typeof define === 'function' && define.amd) define([], function () { return api; });
  else if (typeof module === 'object' && module.exports) module.exports = api;
  else root.Herald = api;
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this, function () {
  'use strict';
BODY

  Herald.Herald = Herald;
  Herald.publish = publish;
  Herald.TRANSPORTS = TRANSPORTS;
  Herald.default = Herald;
  return Herald;
});
"#;
    WRAPPER.replace("BODY", body.trim_end())
}
