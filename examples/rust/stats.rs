//! stats: ABI 1 (WASI command) in Rust, standard library only (Debian's rustc 1.63).
//!
//! Request: numbers separated by whitespace or commas (e.g. latencies, one per line).
//! Response: JSON summary: {"count", "min", "max", "mean", "p50", "p90", "p99", "stddev"}
//! (percentiles by nearest rank; population standard deviation).
//! Bad input (no numbers, a token that is not a finite number, invalid UTF-8) writes nothing
//! to stdout, names the line and token on stderr, and exits 1: a function error.

use std::io::{self, Read, Write};
use std::process::exit;

fn fail(message: &str) -> ! {
    eprintln!("stats: {}", message);
    exit(1);
}

fn parse(text: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for token in line.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()) {
            match token.parse::<f64>() {
                Ok(value) if value.is_finite() => values.push(value),
                _ => fail(&format!("line {}: {:?} is not a finite number", index + 1, token)),
            }
        }
    }
    values
}

/// Nearest-rank percentile of sorted values: the smallest value with at least p% at or below it.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.max(1) - 1]
}

fn main() {
    let mut request = Vec::new();
    if let Err(error) = io::stdin().read_to_end(&mut request) {
        fail(&format!("reading the request: {}", error));
    }
    let text = match String::from_utf8(request) {
        Ok(text) => text,
        Err(error) => fail(&format!("request is not valid UTF-8 text (byte {})", error.utf8_error().valid_up_to())),
    };
    let mut values = parse(&text);
    if values.is_empty() {
        fail("no numbers in the request; send numbers separated by whitespace or commas");
    }
    values.sort_by(|a, b| a.partial_cmp(b).expect("finite numbers compare"));
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count;
    let response = format!(
        "{{\"count\":{},\"min\":{},\"max\":{},\"mean\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"stddev\":{}}}\n",
        values.len(),
        values[0],
        values[values.len() - 1],
        mean,
        percentile(&values, 50.0),
        percentile(&values, 90.0),
        percentile(&values, 99.0),
        variance.sqrt(),
    );
    if let Err(error) = io::stdout().write_all(response.as_bytes()) {
        fail(&format!("writing the response: {}", error));
    }
}
