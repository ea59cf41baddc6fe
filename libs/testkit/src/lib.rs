//! Real parts for tests: a nats-server with JetStream on a free port and a temporary store.
//!
//! Every process started here is killed by its pid when its handle drops, and every wait is
//! bounded, so a failing test cannot leave a server behind or hang the suite.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bound and released by the OS).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port on 127.0.0.1")
}

/// Where the nats-server binary is: `NATS_SERVER_BIN`, then PATH, then Debian's location.
/// Panics with a clear message when there is none, so a test that needs it fails loudly.
pub fn nats_server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("nats-server")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .find(|p| p.is_file())
        .expect("nats-server not found: install it (apt-get install nats-server) or set NATS_SERVER_BIN")
}

/// A nats-server with JetStream, owned by the test that started it.
pub struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port with its store in a fresh temporary directory and waits
    /// (at most 10 s) until it accepts connections.
    pub fn start() -> Self {
        let store = tempfile::tempdir().expect("temporary JetStream store");
        let port = free_port();
        let child = Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let server = NatsServer { child, port, _store: store };
        server.wait_until_listening(Duration::from_secs(10));
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_until_listening(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on port {} within {limit:?}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_server_starts_and_is_killed_on_drop() {
        let server = NatsServer::start();
        let pid = server.pid();
        let port = server.port;
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(server);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "nats-server {pid} still runs after drop");
    }
}
