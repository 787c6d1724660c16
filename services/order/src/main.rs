use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if estate_platform::migrate::is_command(&args) {
        return estate_platform::migrate::main::<estate_order::OrderSettings>(
            "order",
            &args,
            |settings| Some(&settings.database),
            &estate_order::migrator(),
        );
    }
    estate_service_kit::run_main::<estate_order::Application>()
}
