use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if estate_platform::migrate::is_command(&args) {
        return estate_platform::migrate::main::<estate_auth::settings::AuthSettings>(
            "auth",
            &args,
            |settings| settings.database.as_ref(),
            &estate_auth::store::migrator(),
        );
    }
    if estate_auth::cli::is_command(&args) {
        return estate_auth::cli::run(&args);
    }
    estate_service_kit::run_main::<estate_auth::Application>()
}
