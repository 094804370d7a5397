//! The `iot-alerts` job binary.

fn main() -> std::process::ExitCode {
    tributary_jobs::iot_alerts::main()
}
