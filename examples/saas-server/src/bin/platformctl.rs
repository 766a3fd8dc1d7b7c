//! `platformctl`: operator command line for the reference server.
//!
//! ```text
//! platformctl audit verify FILE [--key-hex HEX]
//! ```
//!
//! Verifies an audit export (from `GET /api/audit-logs/export` or
//! `/api/platform/audit-logs/export`) offline: the hash chain from its anchor,
//! and, given the checkpoint key (`--key-hex` or `SAAS_AUDIT_KEY`), the
//! checkpoint's signature. Prints the report as JSON. Exit status: 0 valid,
//! 1 tampered, 2 usage or unreadable file.

use std::io::BufReader;
use std::process::ExitCode;

const USAGE: &str = "usage: platformctl audit verify FILE [--key-hex HEX]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(valid) => {
            if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(msg) => {
            eprintln!("platformctl: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<bool, String> {
    let (file, rest) = match args {
        [a, b, file, rest @ ..] if a == "audit" && b == "verify" => (file, rest),
        _ => return Err(USAGE.into()),
    };
    let key_hex = match rest {
        [] => std::env::var("SAAS_AUDIT_KEY").ok(),
        [flag, hex] if flag == "--key-hex" => Some(hex.clone()),
        _ => return Err(USAGE.into()),
    };
    let signer = match key_hex {
        Some(k) => {
            let key = hex::decode(k.trim()).map_err(|_| "the key must be hex".to_owned())?;
            Some(saas_audit::CheckpointSigner::new("server", &key).map_err(|e| e.to_string())?)
        }
        None => {
            eprintln!(
                "platformctl: no key given: the chain is checked, the checkpoint signature is not"
            );
            None
        }
    };
    let f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
    let report =
        saas_audit::verify_export(BufReader::new(f), signer.as_ref()).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    );
    Ok(report.is_valid())
}
