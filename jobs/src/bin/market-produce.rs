//! The `market-produce` job binary.

fn main() -> std::process::ExitCode {
    tributary_jobs::market_produce::main()
}
