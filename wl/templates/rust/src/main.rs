//! {{name}}: a wl function (ABI 1, a WASI command): the request body is stdin, the response
//! is stdout, stderr is the invocation's log, and a non-zero exit is a function error.
use std::io::{self, Read, Write};

fn main() {
    let mut request = String::new();
    if let Err(error) = io::stdin().read_to_string(&mut request) {
        eprintln!("{{name}}: the request is not UTF-8 text: {error}");
        std::process::exit(1);
    }
    let who = if request.trim().is_empty() { "world" } else { request.trim() };
    let function = std::env::var("WL_FUNCTION").unwrap_or_else(|_| "{{name}}".into());
    let mut out = io::stdout().lock();
    writeln!(out, "Hello, {who}! (from {function})").expect("writing the response");
    eprintln!("{{name}}: answered {} bytes", request.len());
}
