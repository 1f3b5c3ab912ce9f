//! Runs one `StepSpec` (JSON on stdin, or in the file after `--spec`) in the sandbox and prints the
//! `Outcome` as JSON; `--probe` only checks that the sandbox works here.
//! It doubles as its own sandbox helper, which is what lets the crate's
//! tests run it under another user. Exit status: 0 when a result was
//! printed, 2 when the sandbox failed.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(farm_sandbox::HELPER_ARG) {
        farm_sandbox::helper_main();
    }
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("farm-sandbox-run: {e}");
            ExitCode::from(2)
        }
    }
}

fn try_main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("--probe") {
        farm_sandbox::probe()?;
        println!("ok");
        return Ok(());
    }
    let (source, input) = match std::env::args().nth(1).as_deref() {
        Some("--spec") => {
            let path = std::env::args().nth(2).ok_or("--spec needs a file")?;
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            (path, text)
        }
        _ => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            ("stdin".to_string(), text)
        }
    };
    let spec: farm_sandbox::StepSpec =
        serde_json::from_str(&input).map_err(|e| format!("{source}: StepSpec JSON: {e}"))?;
    let outcome = farm_sandbox::run(&spec)?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}
