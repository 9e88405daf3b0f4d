//! The `clustermgr` binary: thin, the work is in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(clustermgr::cli::main().clamp(0, 255) as u8)
}
