//! The `iot-stats` job binary.

fn main() -> std::process::ExitCode {
    tributary_jobs::iot_stats::main()
}
