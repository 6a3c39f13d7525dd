use clap::Parser;
use cornershop_server::config::{Cli, Command};
use cornershop_server::{startup::Application, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(&args.log)?;
            let app = Application::build(args).await?;
            tracing::info!(address = %app.local_addr(), "cornershop is listening");
            app.run_until_stopped(telemetry::shutdown_signal()).await?;
            tracing::info!("cornershop stopped");
        }
    }
    Ok(())
}
