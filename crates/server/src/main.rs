use clap::Parser;
use cornershop_server::config::{Cli, Command, KeysCommand, ProjectionsCommand};
use cornershop_server::{shutdown, startup::Application, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let telemetry = telemetry::init(&args.log)?;
            let app = Application::build(*args).await?;
            tracing::info!(
                address = %app.local_addr(),
                https = app.serves_https(),
                "cornershop is listening"
            );
            app.run_until_stopped(shutdown::shutdown_signal()).await?;
            tracing::info!("cornershop stopped");
            telemetry.shutdown();
        }
        Command::Projections(ProjectionsCommand::Rebuild { name, store, log }) => {
            let _telemetry = telemetry::init(&log)?;
            cornershop_server::projections::rebuild(name, &store).await?;
        }
        Command::Projections(ProjectionsCommand::Verify { store, log }) => {
            let _telemetry = telemetry::init(&log)?;
            if !cornershop_server::projections::verify(&store).await? {
                std::process::exit(1);
            }
        }
        Command::Keys(KeysCommand::Rotate {
            new_master_key_file,
            store,
        }) => {
            cornershop_server::keys::rotate(&new_master_key_file, &store).await?;
        }
        Command::Token(args) => {
            let path = args.signing_key_file.clone().unwrap_or_else(|| {
                args.data_dir
                    .join(cornershop_server::config::SIGNING_KEY_FILE)
            });
            let issuer = cornershop_server::auth::issuer::LocalIssuer::open_or_create(&path)?;
            let token =
                issuer.mint(&args.sub, &args.roles, args.ttl.into(), &args.oidc_audience)?;
            println!("{token}");
        }
        Command::Simulate(args) => {
            let json = args.json;
            match cornershop_server::simulate::run(args).await {
                Ok(report) if json => println!("{}", serde_json::to_string(&report)?),
                Ok(report) => print!("{}", report.summary()),
                Err(e) => {
                    eprintln!("cornershop simulate: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    Ok(())
}
