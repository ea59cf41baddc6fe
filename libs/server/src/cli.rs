//! The command line every binary takes; everything else is configured through the environment.
//!
//! - no flag: serve (a service with a database first applies pending migrations);
//! - `--migrate-only` and `--no-migrate` ([`Migrations::Check`]): services with a database
//!   (`verimail-events` applies them);
//! - `--check-config`: read the configuration as serving would, report every variable set
//!   that nothing reads (a typo, a setting of another part), and exit: 0 when both are clean;
//! - `--health-check`: ask the instance running beside it (its gRPC health, or the gateway's
//!   `/readyz`) whether it is ready, and exit 0 if so: a container health check.

use crate::config::Vars;
use std::time::Duration;

/// What a service with a database does with pending migrations at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Migrations {
    /// Apply pending migrations, one instance at a time (the default).
    #[default]
    Apply,
    /// `--no-migrate`: apply nothing, and refuse to start while migrations are pending (for
    /// deployments that migrate in a job of their own).
    Check,
}

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve(Migrations),
    MigrateOnly,
    CheckConfig,
    HealthCheck,
}

/// Reads the arguments (without the program name). `database`: whether this binary has one,
/// and so takes the migration flags.
pub fn parse(args: impl IntoIterator<Item = String>, database: bool) -> Result<Mode, String> {
    let mut mode = Mode::Serve(Migrations::Apply);
    for arg in args {
        let next = match arg.as_str() {
            "--migrate-only" if database => Mode::MigrateOnly,
            "--no-migrate" if database => Mode::Serve(Migrations::Check),
            "--check-config" => Mode::CheckConfig,
            "--health-check" => Mode::HealthCheck,
            other => {
                let flags = if database {
                    "--migrate-only, --no-migrate, --check-config and --health-check"
                } else {
                    "--check-config and --health-check"
                };
                return Err(format!(
                    "unknown argument {other:?}: the only flags are {flags} (everything else is configured through the environment)"
                ));
            }
        };
        if mode != Mode::Serve(Migrations::Apply) {
            return Err("give at most one flag".into());
        }
        mode = next;
    }
    Ok(mode)
}

/// The mode from this process's command line, once `VERIMAIL_ENV` names a known environment.
pub fn mode(vars: &Vars, database: bool) -> anyhow::Result<Mode> {
    let environment = vars.environment()?;
    if environment == crate::config::Environment::Development {
        tracing::warn!("VERIMAIL_ENV=development: development defaults allowed; never use this in production");
    }
    parse(std::env::args().skip(1), database).map_err(anyhow::Error::msg)
}

/// Serves until SIGINT or SIGTERM: `run` gets the shutdown signal; the spans still buffered are
/// exported before the process ends.
pub async fn serve<F, Fut>(run: F) -> anyhow::Result<()>
where
    F: FnOnce(crate::shutdown::Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let shutdown = crate::shutdown::Shutdown::default();
    tokio::spawn(shutdown.clone().on_signal());
    let result = run(shutdown).await;
    // The exporter needs the runtime, so not on a worker thread.
    let _ = tokio::task::spawn_blocking(crate::telemetry::flush).await;
    result
}

/// Variables read by others than our configuration code, or set by every environment.
const NOT_OURS: &[&str] =
    &["RUST_LOG", "RUST_BACKTRACE", "PATH", "HOME", "HOSTNAME", "TERM", "LANG", "PWD", "SHLVL", "_"];

/// `--check-config`: the configuration (already read into `config` from `vars`) must be valid,
/// and no variable set may look like ours without being one this part reads: a misspelling
/// (`SMTP_URLL`), or a setting that does not exist (`WEBHOOK_SECRET`), says which name was
/// probably meant. Another part's variables (an environment file shared by all four) and the
/// rest of the world's (a shell's, a pod's, a base image's) are fine.
pub fn check_config<T>(vars: &Vars, config: Result<T, crate::config::ConfigError>) -> anyhow::Result<()> {
    use crate::variables::{Unread, classify};
    config?;
    let read = vars.read_variables();
    let read_list: Vec<&'static str> = read.iter().copied().collect();
    let (mut misspelt, mut others, mut ignored) = (Vec::new(), Vec::new(), 0);
    for name in std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()) {
        if read.contains(name.as_str())
            || NOT_OURS.contains(&name.as_str())
            || name.starts_with("OTEL_")
            || name.starts_with("LC_")
        {
            continue;
        }
        match classify(&name, &read_list) {
            Unread::OtherPart => others.push(name),
            Unread::Misspelt(meant) => {
                match meant {
                    Some(meant) => eprintln!("{name} is set but nothing here reads it: did you mean {meant}?"),
                    None => eprintln!("{name} is set but nothing here reads it"),
                }
                misspelt.push(name);
            }
            Unread::NotOurs => ignored += 1,
        }
    }
    if !misspelt.is_empty() {
        misspelt.sort();
        anyhow::bail!(
            "{} variable(s) set that look like Verimail's but this binary does not read: {}",
            misspelt.len(),
            misspelt.join(", ")
        );
    }
    println!("configuration is valid; every variable set that looks like Verimail's is read");
    if !others.is_empty() {
        others.sort();
        println!("set for other parts, not read here: {}", others.join(" "));
    }
    if ignored > 0 {
        println!("{ignored} other variable(s) set, none of them Verimail's: ignored");
    }
    let ours: Vec<&str> = read.into_iter().filter(|name| !NOT_OURS.contains(name)).collect();
    println!("reads: {}", ours.join(" "));
    Ok(())
}

/// `--health-check` of a gRPC service listening at `addr` (an unspecified host means this
/// machine): SERVING, or an error saying what it answered.
pub async fn grpc_health_check(addr: &str, tls: &crate::tls::GrpcTls) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let channel = tls.channel("health check", &local(addr))?;
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer from {addr} within 3 s"))??;
    match answer.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => anyhow::bail!("{addr} is {}", other.as_str_name()),
    }
}

/// `--health-check` of the gateway listening at `addr`: its `/readyz` answers 200.
pub async fn http_ready_check(addr: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(local(addr)).await?;
        stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
        let mut reply = Vec::new();
        stream.take(4096).read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&reply).into_owned())
    };
    let reply = tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {addr} within 3 s"))??;
    let status = reply.lines().next().unwrap_or_default();
    anyhow::ensure!(status.split_whitespace().nth(1) == Some("200"), "{addr}/readyz: {status}: {}", body(&reply));
    Ok(())
}

fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map(|(_, body)| body.trim()).unwrap_or_default()
}

/// A listening address as a client reaches it from the same machine.
fn local(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]" | "", port)) => format!("127.0.0.1:{port}"),
        _ => addr.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str], database: bool) -> Result<Mode, String> {
        parse(list.iter().map(|s| s.to_string()), database)
    }

    #[test]
    fn flags_pick_the_mode() {
        assert_eq!(args(&[], true), Ok(Mode::Serve(Migrations::Apply)));
        assert_eq!(args(&["--no-migrate"], true), Ok(Mode::Serve(Migrations::Check)));
        assert_eq!(args(&["--migrate-only"], true), Ok(Mode::MigrateOnly));
        assert_eq!(args(&["--check-config"], false), Ok(Mode::CheckConfig));
        assert_eq!(args(&["--health-check"], false), Ok(Mode::HealthCheck));
        assert!(args(&["--migrate-only", "--no-migrate"], true).unwrap_err().contains("at most one"));
        assert!(
            args(&["--migrate-only"], false).unwrap_err().contains("--migrate-only"),
            "the gateway has no database"
        );
        assert!(args(&["--port"], true).unwrap_err().contains("unknown argument \"--port\""));
        assert_eq!(local("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(local("user-service:50051"), "user-service:50051");
    }
}
