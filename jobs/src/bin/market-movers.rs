//! The `market-movers` job binary.

fn main() -> std::process::ExitCode {
    tributary_jobs::market_movers::main()
}
