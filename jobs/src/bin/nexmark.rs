//! The `nexmark` job binary: `nexmark --set job.query='"q5"'`.

fn main() -> std::process::ExitCode {
    tributary_jobs::nexmark::main()
}
