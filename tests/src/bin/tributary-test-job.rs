//! Runs any Tributary job by name, so the end-to-end tests can start job processes:
//! `tributary-test-job iot-stats --workers 2 ...`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<_> = std::env::args_os().collect();
    if args.len() < 2 {
        eprintln!("usage: tributary-test-job JOB [FLAGS...]");
        return ExitCode::from(2);
    }
    let job = args.remove(1);
    match job.to_str() {
        Some("iot-stats") => tributary_jobs::iot_stats::main_from(args),
        Some("iot-produce") => tributary_jobs::iot_produce::main_from(args),
        _ => {
            eprintln!("unknown job {job:?}");
            ExitCode::from(2)
        }
    }
}
