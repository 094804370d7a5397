//! The `market-tca` job binary.

fn main() -> std::process::ExitCode {
    tributary_jobs::market_tca::main()
}
