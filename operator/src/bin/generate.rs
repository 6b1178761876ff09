//! Writes every file generated from the operator's code (see `paysys_operator::generate`):
//! the CRD (both copies) and the chart's operator RBAC. `--check` writes nothing and fails
//! naming each file that differs.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|arg| arg == "--check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stale = Vec::new();
    for (relative, content) in paysys_operator::generate::files() {
        let path = root.join(relative);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        if check {
            stale.push(relative);
        } else if let Err(error) = std::fs::write(&path, content) {
            eprintln!("writing {relative}: {error}");
            return ExitCode::FAILURE;
        } else {
            println!("wrote {relative}");
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "stale: {}; run `cargo run -p paysys-operator --bin generate`",
            stale.join(", ")
        );
        ExitCode::FAILURE
    }
}
