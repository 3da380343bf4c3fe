//! Unit tests of the filter module: Cobra's dialect (its quirk table and upstream cases), the native
//! dialect, and the registry.

mod cobra;
mod native;
mod registry;

use serde_json::Value;

use super::{Document, Filter, Output, Unevaluable, Verdict};

/// A verdict with its output owned, to compare in assertions.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Deliver(Value),
    NoMatch,
    Unevaluable(Unevaluable),
}

fn got(filter: &Filter, document: Document) -> Got {
    match filter.evaluate(&document) {
        Verdict::Match(Output::Whole) => match &document {
            Document::Json(message) => Got::Deliver(message.clone()),
            Document::NotJson => Got::Deliver(Value::String("<the payload>".to_owned())),
        },
        Verdict::Match(Output::Part(part)) => Got::Deliver(part.clone()),
        Verdict::Match(Output::Projected(value)) => Got::Deliver(value),
        Verdict::NoMatch => Got::NoMatch,
        Verdict::Unevaluable(why) => Got::Unevaluable(why),
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("test message {text} is not JSON: {e}"))
}
