//! The `market-candles` job binary.

fn main() -> std::process::ExitCode {
    tributary_jobs::market_candles::main()
}
