//! The nginx.conf importer (`herald::config::nginx::import_str`): tokenizer, block parser, directive
//! meaning, TOML rendering and the validation of the result. Errors must be `file:line` errors, never
//! panics, and whatever it accepts must be a config the TOML loader accepts too.
//!
//! Inputs with `include` or a `_file` directive are skipped: those read paths from disk (a fuzzer that
//! finds `include /dev/zero;` would only measure the disk). The text is imported as if read from a
//! directory that does not exist.

#![no_main]

use herald::config::nginx::import_str;
use herald::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("include") || text.contains("_file") {
        return;
    }
    let path = Path::new("/nonexistent-herald-fuzz/nginx.conf");
    if let Ok(import) = import_str(text, path) {
        // `herald migrate` prints this TOML; it must load as it was imported.
        if let Err(e) = Config::from_toml(&import.toml, "migrated.toml", path.parent()) {
            panic!("imported TOML does not load: {e}\n{}", import.toml);
        }
        for warning in &import.warnings {
            let _ = warning.to_string();
        }
    }
});
