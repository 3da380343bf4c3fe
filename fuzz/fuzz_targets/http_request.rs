//! Raw network input to a running Herald server: the fuzzed bytes are sent as-is on a new loopback
//! connection to an in-process server with every kind of location (publisher with bearer tokens and
//! address lists, every subscriber mode, JWT, upstream authorization, regex captures, stats, metrics,
//! static files); once the server is silent for a moment the client half-closes. Herald must answer
//! with HTTP (or just close), never panic
//! (libFuzzer's panic hook aborts on a panic in any server task), never answer 500 and never keep the
//! connection open once the request is over (see `herald_fuzz::exchange`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let addr = herald_fuzz::server();
    let answer = herald_fuzz::exchange(addr, data, herald_fuzz::End::HalfCloseWhenIdle);
    if answer.is_empty() {
        return;
    }
    assert!(
        answer.starts_with(b"HTTP/1."),
        "not an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    if let Some(status) = herald_fuzz::status(&answer) {
        assert!(
            status != 500 && !(501..=599).contains(&status) || status == 503,
            "server error {status} for {:?}: {:?}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&answer[..answer.len().min(500)])
        );
    }
});
