use clap::Parser;
use cornershop_server::config::{BackupCommand, Cli, Command, KeysCommand, ProjectionsCommand};
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
        Command::Backup(command) => {
            if let Err(e) = backup(command).await {
                eprintln!("cornershop backup: {e:#}");
                std::process::exit(1);
            }
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

async fn backup(command: BackupCommand) -> anyhow::Result<()> {
    use cornershop_server::backup;
    match command {
        BackupCommand::Create { out, since, store } => {
            let manifest = backup::create(&out, since, &store).await?;
            println!(
                "backed up {} events ({} aggregates) up to position {}{} and {} other rows to {}",
                manifest.rows.get("events").copied().unwrap_or(0),
                manifest.aggregates.len(),
                manifest.position,
                if since > 0 {
                    format!(" (after {since})")
                } else {
                    String::new()
                },
                manifest
                    .rows
                    .iter()
                    .filter(|(t, _)| *t != "events")
                    .map(|(_, n)| n)
                    .sum::<u64>(),
                out.display()
            );
        }
        BackupCommand::Verify { file } => {
            let verified = backup::verify(&file, true)?;
            println!(
                "{} is a whole backup: {} events of {} aggregates up to position {}, every \
                 checksum matches and every aggregate replays",
                file.display(),
                verified.manifest.rows.get("events").copied().unwrap_or(0),
                verified.manifest.aggregates.len(),
                verified.manifest.position
            );
        }
        BackupCommand::Restore {
            file,
            erasure_ledgers,
            store,
        } => {
            let restored = backup::restore(&file, &store, &erasure_ledgers).await?;
            println!(
                "restored {} rows ({} events up to position {}) from {}; {} erasures applied \
                 again; read models rebuilt",
                restored.rows,
                restored.manifest.rows.get("events").copied().unwrap_or(0),
                restored.manifest.position,
                file.display(),
                restored.erasures_reapplied
            );
        }
    }
    Ok(())
}
