use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if estate_platform::migrate::is_command(&args) {
        return estate_platform::migrate::main::<estate_inventory::InventorySettings>(
            "inventory",
            &args,
            |settings| Some(&settings.database),
            &estate_inventory::migrator(),
        );
    }
    estate_service_kit::run_main::<estate_inventory::Application>()
}
