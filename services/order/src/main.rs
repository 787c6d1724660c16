use std::process::ExitCode;

fn main() -> ExitCode {
    estate_platform::migrate::service_main::<estate_order::Application>(
        |settings| Some(&settings.database),
        &estate_order::migrator(),
    )
}
