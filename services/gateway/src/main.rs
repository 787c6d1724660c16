use std::process::ExitCode;

fn main() -> ExitCode {
    estate_service_kit::run_main::<estate_gateway::Application>()
}
