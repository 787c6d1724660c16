use std::process::ExitCode;

fn main() -> ExitCode {
    estate_platform::migrate::service_main::<estate_payment::Application>(
        |settings| Some(&settings.database),
        &estate_payment::migrator(),
    )
}
