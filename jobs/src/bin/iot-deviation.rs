//! The `iot-deviation` job binary.

fn main() -> std::process::ExitCode {
    tributary_jobs::iot_deviation::main()
}
