//! The `iot-produce` job binary.

fn main() -> std::process::ExitCode {
    tributary_jobs::iot_produce::main_from(std::env::args_os())
}
