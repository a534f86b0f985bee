//! The `switchboard-bench` binary: parses the command line and runs the chosen scenario.

use std::process::ExitCode;

use clap::Parser;
use switchboard_bench::BenchArgs;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(switchboard_bench::run(args)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
