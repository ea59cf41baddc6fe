//! Real parts for tests: a nats-server with JetStream on a free port and a temporary store, a
//! cluster of them, a TCP door a test can close, a fresh PostgreSQL database, free ports.
//! Nothing of Verimail's own lives here (the stack of our parts is `tests/src`).
//!
//! Every process started here is killed by its pid when its handle drops, and every wait is
//! bounded, so a failing test cannot leave a server behind or hang the suite.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port that was free a moment ago, for a process to bind soon after. It is taken below
/// Linux's ephemeral range (32768 and up), from a spot that differs per call: a port the
/// kernel hands out itself (bind to 0, or any outgoing connection, of which the tests make
/// many) could be handed out again to someone else between this check and the real bind.
///
/// And it is never handed to two tests: a test that kills a server and starts it again on the
/// same port leaves the port free meanwhile, and another test (its own process) must not take
/// it then, or each would end up talking to the other's server. Each port handed out is
/// claimed in a folder every test process shares ([`claim`]).
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 32_768 - FIRST;
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let start = std::process::id().wrapping_mul(2_654_435_761)
        ^ clock
        ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(7_919);
    let ports = || (0..COUNT).map(|step| (FIRST + start.wrapping_add(step) % COUNT) as u16);
    let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    ports()
        .find(|&port| bindable(port) && claim(port))
        // Every port claimed in the last half hour (runs back to back): free is enough.
        .or_else(|| ports().find(|&port| bindable(port)))
        .expect("no free port on 127.0.0.1 below 32768")
}

/// Claims `port` for this test process: false if another process claimed it in the last half
/// hour (a claim is a file, created exclusively; an older one is taken over). Without the
/// folder, every port counts as unclaimed.
fn claim(port: u16) -> bool {
    const KEPT: Duration = Duration::from_secs(30 * 60);
    let dir = std::env::temp_dir().join("verimail-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let path = dir.join(port.to_string());
    let create = || std::fs::OpenOptions::new().write(true).create_new(true).open(&path);
    match create() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stale = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > KEPT));
            // Two processes taking over the same half-hour-old claim at the same instant could
            // both win; ports handed out within a run are never stale.
            stale && std::fs::remove_file(&path).is_ok() && create().is_ok()
        }
        Err(_) => true,
    }
}

/// Where the nats-server binary is: `NATS_SERVER_BIN`, else the pinned release that
/// `scripts/nats-server.sh` installs into `.tools/` (and prints), asked once per process.
/// Not a nats-server on PATH: Debian's 2.9 panics now and then under these tests.
/// Panics with a clear message when there is none, so a test that needs it fails loudly.
pub fn nats_server_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
                return PathBuf::from(bin);
            }
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/nats-server.sh");
            let out = Command::new(script)
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {script}: {e}; set NATS_SERVER_BIN"));
            assert!(out.status.success(), "{script} failed ({}); set NATS_SERVER_BIN", out.status);
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// A nats-server with JetStream, owned by the test that started it.
pub struct NatsServer {
    child: Child,
    port: u16,
    /// Arguments beyond the address and store: a cluster node's, or a config file.
    args: Vec<String>,
    /// The server's environment beyond ours (passwords a config file names).
    env: Vec<(String, String)>,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port with its store in a fresh temporary directory and waits
    /// (at most 10 s) until it accepts connections.
    pub fn start() -> Self {
        Self::start_with(Vec::new(), Vec::new())
    }

    /// A server that reads `config` (users and their permissions, say), with `env` in its
    /// environment.
    pub fn start_configured(config: &std::path::Path, env: Vec<(String, String)>) -> Self {
        let args = vec!["-c".to_owned(), config.display().to_string()];
        Self::start_with(args, env)
    }

    /// On a free port; on another one while the port turns out taken (free ports are only
    /// free when chosen: another test may bind the same one first).
    fn start_with(args: Vec<String>, env: Vec<(String, String)>) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(free_port(), args.clone(), env.clone()) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("nats-server did not start on any of five free ports: {last}")
    }

    /// A server on `port`, once it listens there itself.
    fn try_start(port: u16, args: Vec<String>, env: Vec<(String, String)>) -> Result<Self, String> {
        let store = tempfile::tempdir().expect("temporary JetStream store");
        let child = Self::spawn(port, &store, &args, &env);
        let mut server = NatsServer { child, port, args, env, _store: store };
        server.wait_until_listening(Duration::from_secs(10))?;
        if let Ok(mut started) = STARTED_NATS.lock() {
            started.push((server.child.id(), port, server._store.path().join("stderr.log")));
        }
        Ok(server)
    }

    /// Where the server writes the ports it listens on, once it listens on all of them.
    fn ports_dir(store: &std::path::Path) -> PathBuf {
        store.join("ports")
    }

    fn spawn(port: u16, store: &tempfile::TempDir, args: &[String], env: &[(String, String)]) -> Child {
        let ports = Self::ports_dir(store.path());
        std::fs::create_dir_all(&ports).expect("ports file folder");
        // Flags win over a config file's settings, wherever they stand.
        Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .arg("--ports_file_dir")
            .arg(&ports)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            // Kept in its store, for [`nats_report`]: why a server went away.
            .stderr(std::fs::File::create(store.path().join("stderr.log")).map_or_else(|_| Stdio::null(), Stdio::from))
            .spawn()
            .expect("start nats-server")
    }

    /// SIGKILL: no goodbye to clients, nothing flushed beyond what JetStream already synced.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and the same store (after `kill`), trying
    /// again for a while if the port is held for a moment (another test probing it).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = Self::spawn(self.port, &self._store, &self.args, &self.env);
            match self.wait_until_listening(Duration::from_secs(10)) {
                Ok(()) => return,
                Err(why) => assert!(Instant::now() < deadline, "nats-server did not restart: {why}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Until this server (not another process that holds the port: a test that connected to
    /// that would wait for ever) listens: its ports file, written once it listens, is there
    /// and the port answers. An error if it exits first (the port was taken) or the time is up.
    fn wait_until_listening(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let ports_file = format!("_{}.ports", self.child.id());
        let ports = Self::ports_dir(self._store.path());
        loop {
            let written = std::fs::read_dir(&ports)
                .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().ends_with(&ports_file)))
                .unwrap_or(false);
            if written && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("nats-server on port {} exited ({status})", self.port));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("nats-server did not listen on port {} within {limit:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several nats-servers clustered on loopback ports (JetStream clustered, each node with its
/// own store), or one plain server. Every node is killed when it drops.
/// The nats-servers this process started: pid, client port and where its stderr goes.
static STARTED_NATS: Mutex<Vec<(u32, u16, PathBuf)>> = Mutex::new(Vec::new());

/// How each nats-server this process started is doing (running or gone, taking connections
/// or not): for the message of a test that waited in vain for something built on NATS.
pub fn nats_report() -> String {
    let started = STARTED_NATS.lock().map(|started| started.clone()).unwrap_or_default();
    let lines: Vec<String> = started
        .iter()
        .map(|(pid, port, stderr)| {
            // After the command's ")": the state, and (Linux 3.5+) the exit code as the 50th.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
            let running = match fields.first().copied() {
                None => "gone".to_owned(),
                Some("Z") => {
                    let code: i32 = fields.get(49).and_then(|c| c.parse().ok()).unwrap_or(-1);
                    format!("exited (not yet reaped; exit status {}, signal {})", code >> 8, code & 0x7f)
                }
                Some(state) => format!("running (state {state})"),
            };
            let taking = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], *port)), Duration::from_secs(1))
                .map_or_else(|e| format!("refuses connections ({e})"), |_| "takes connections".to_owned());
            let said = std::fs::read_to_string(stderr).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
            format!("nats-server pid {pid} on port {port}: {running}, {taking}; its last words: {:?}", tail.join(" | "))
        })
        .collect();
    if lines.is_empty() { "no nats-server started by this process".into() } else { lines.join("; ") }
}

pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// One plain server for `nodes == 1`; otherwise `nodes` servers routed to each other,
    /// started at once (JetStream needs a quorum to elect its leader).
    pub fn start(nodes: usize) -> NatsCluster {
        if nodes <= 1 {
            return NatsCluster { nodes: vec![NatsServer::start()] };
        }
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(nodes) {
                Ok(cluster) => return cluster,
                Err(why) => last = why,
            }
        }
        panic!("a cluster of {nodes} nats-servers did not start on five sets of free ports: {last}")
    }

    /// One try on fresh ports; the nodes started so far are killed on an error.
    fn try_start(nodes: usize) -> Result<NatsCluster, String> {
        let client_ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let routes = route_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        let nodes = client_ports
            .iter()
            .zip(&route_ports)
            .enumerate()
            .map(|(n, (client, route))| {
                let cluster = vec![
                    "--server_name".to_owned(),
                    format!("n{}", n + 1),
                    "--cluster_name".to_owned(),
                    "verimail-test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".to_owned(),
                    routes.clone(),
                ];
                NatsServer::try_start(*client, cluster, Vec::new())
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(NatsCluster { nodes })
    }

    /// Every node's client URL, comma-separated (as `NATS_URL` takes them).
    pub fn url(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// Kills every node (SIGKILL).
    pub fn kill(&mut self) {
        self.nodes.iter_mut().for_each(NatsServer::kill);
    }

    /// Starts every node again on its port and store.
    pub fn restart(&mut self) {
        self.nodes.iter_mut().for_each(NatsServer::restart);
    }
}

/// A TCP forwarder in front of a server, that a test can close (each new connection closed at
/// once, and every open connection cut) and open again on the same port: a network fault between two parts.
pub struct TcpDoor {
    port: u16,
    open: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
}

impl TcpDoor {
    /// Opens a door on a free port to `backend`. Its threads live as long as the test process.
    pub fn open(backend: SocketAddr) -> Arc<TcpDoor> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a door port");
        let door = Arc::new(TcpDoor {
            port: listener.local_addr().expect("door address").port(),
            open: AtomicBool::new(true),
            connections: Mutex::new(Vec::new()),
        });
        let this = door.clone();
        std::thread::spawn(move || this.accept_loop(listener, backend));
        door
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes (refuses new connections, cuts open ones: a network failure) or opens the door.
    pub fn set_open(&self, open: bool) {
        self.refuse_new(!open);
        if !open {
            for connection in self.connections.lock().expect("door lock").drain(..) {
                let _ = connection.shutdown(Shutdown::Both);
            }
        }
    }

    /// Refuses new connections (or accepts them again) and leaves open ones be, as a server
    /// that is stopping does.
    pub fn refuse_new(&self, refuse: bool) {
        self.open.store(!refuse, Ordering::SeqCst);
    }

    /// Polls every 5 ms. A closed door keeps its port and closes each connection it accepts
    /// at once: were it to drop its listener, the kernel could hand the port to another test
    /// (whose server would then answer this door's clients) until it binds it again.
    fn accept_loop(&self, listener: TcpListener, backend: SocketAddr) {
        listener.set_nonblocking(true).expect("non-blocking listener");
        loop {
            while let Ok((client, _)) = listener.accept() {
                if self.open.load(Ordering::SeqCst) {
                    self.forward(client, backend);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn forward(&self, client: TcpStream, backend: SocketAddr) {
        let Ok(server) = TcpStream::connect(backend) else { return };
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let mut connections = self.connections.lock().expect("door lock");
        connections.retain(|c| c.peer_addr().is_ok());
        for stream in [&client, &server] {
            if let Ok(clone) = stream.try_clone() {
                connections.push(clone);
            }
        }
        for (from, to) in [(&client, &server), (&server, &client)] {
            let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { continue };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
            });
        }
    }
}

/// A PostgreSQL database on the machine's server (`TEST_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432`), this test's alone while the handle lives: empty
/// ([`PostgresDb::create`]), or with the tables of its kind and no rows
/// ([`PostgresDb::reused`]).
///
/// Creating a database costs the server a copy of its template and a flush of it (0.2 to 1.5
/// s here, more while other work writes), and migrating one a third of a second per service,
/// three of each per test stack: so databases are kept and reused instead. Each is a slot,
/// `verimail_pool_<kind>_<n>`, held through a session-level advisory lock on a connection the
/// handle keeps open, so a test process that dies frees its slots with its connections. A slot
/// taken again first has the sessions left in it ended; then its `public` schema is made anew
/// (empty), or every table but `seaql_migrations` is truncated (reused: the migrations stay
/// applied). A test that damages a reused database's tables calls [`PostgresDb::discard`].
pub struct PostgresDb {
    server: String,
    name: String,
    /// The one connection holding the slot's advisory lock.
    claim: Option<sea_orm::DatabaseConnection>,
    /// Made empty when the handle drops: its tables were damaged.
    discard: AtomicBool,
}

/// Slots of one kind a machine's tests may hold at once.
const POOL_SLOTS: i32 = 64;

impl PostgresDb {
    /// An empty database.
    pub async fn create() -> PostgresDb {
        PostgresDb::claim("empty", false).await
    }

    /// A database that holds the tables of `kind` (lower-case letters, digits and `_`; name
    /// it by what migrates it, and by the migrations, so another set never shares it) from an
    /// earlier test, with no rows; empty the first time.
    pub async fn reused(kind: &str) -> PostgresDb {
        assert!(
            kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "a database kind is lower-case letters, digits and _: {kind:?}"
        );
        PostgresDb::claim(kind, true).await
    }

    async fn claim(kind: &str, keep_tables: bool) -> PostgresDb {
        use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement};
        let server = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        // One connection and no recycling: the advisory lock belongs to that session.
        let mut options = ConnectOptions::new(database_url(&server, "postgres"));
        options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None).sqlx_logging(false);
        let claim = Database::connect(options)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {server} is needed by this test: {e}"));
        let backend = claim.get_database_backend();
        // The lock's first key names the kind (FNV-1a of its name), the second the slot.
        let kind_key = fingerprint(kind) as i32;
        for slot in 0..POOL_SLOTS {
            let lock = Statement::from_sql_and_values(
                backend,
                "SELECT pg_try_advisory_lock($1, $2)",
                [kind_key.into(), slot.into()],
            );
            let row = claim.query_one_raw(lock).await.expect("ask for a test database slot");
            if row.and_then(|row| row.try_get_by_index::<bool>(0).ok()) != Some(true) {
                continue;
            }
            let name = format!("verimail_pool_{kind}_{slot}");
            let find = Statement::from_sql_and_values(
                backend,
                "SELECT 1 FROM pg_database WHERE datname = $1",
                [name.clone().into()],
            );
            if claim.query_one_raw(find).await.expect("look for the slot's database").is_none() {
                claim.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create a test database");
            } else {
                claim.execute_unprepared(&end_sessions(&name)).await.expect("end the sessions left in a test database");
                let db = Database::connect(database_url(&server, &name)).await.expect("connect to a test database");
                db.execute_unprepared(if keep_tables { TRUNCATE_ALL } else { EMPTY })
                    .await
                    .expect("empty a test database");
                db.close().await.expect("close the emptying connection");
            }
            return PostgresDb { server, name, claim: Some(claim), discard: AtomicBool::new(false) };
        }
        panic!("all {POOL_SLOTS} test database slots of kind {kind} are taken");
    }

    /// Makes the database empty when the handle drops (not only its rows): for a test that
    /// dropped or altered a table of a reused database.
    pub fn discard(&self) {
        self.discard.store(true, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        database_url(&self.server, &self.name)
    }

    /// The server's address, for a [`TcpDoor`] in front of it.
    pub fn server_addr(&self) -> SocketAddr {
        let host_port = self.server.rsplit('@').next().unwrap_or(&self.server).trim_start_matches("postgres://");
        std::net::ToSocketAddrs::to_socket_addrs(host_port).ok().and_then(|mut a| a.next()).expect("PostgreSQL address")
    }

    /// The URL of this database reached through another port on 127.0.0.1 (a door).
    pub fn url_through(&self, port: u16) -> String {
        let user = self.server.trim_start_matches("postgres://").split('@').next().unwrap_or("postgres");
        format!("postgres://{user}@127.0.0.1:{port}/{}?sslmode=disable", self.name)
    }
}

/// A short, stable fingerprint of `text` (32-bit FNV-1a): for names, not for security.
pub fn fingerprint(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The URL of the database `name` on `server`. On a server of this machine, without TLS
/// (`sslmode=disable`): the client offers TLS by default, and getting ready to (its root
/// certificates) costs about 90 ms of every new connection, which the server then refuses
/// anyway; with three services per stack and connections opened at start and while
/// migrating, that was a second of each test's start.
fn database_url(server: &str, name: &str) -> String {
    let host = server.rsplit('@').next().unwrap_or(server).trim_start_matches("postgres://");
    let local = ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| host.starts_with(h));
    if local && !server.contains('?') { format!("{server}/{name}?sslmode=disable") } else { format!("{server}/{name}") }
}

/// Ends every session in the database `name` but the caller's own.
fn end_sessions(name: &str) -> String {
    format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
}

/// A schema made anew: nothing in it.
const EMPTY: &str = "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;";

/// Every table's rows gone, but the migrations' record: the tables stay as migrated.
const TRUNCATE_ALL: &str = "DO $$ DECLARE tables text; BEGIN \
    SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO tables FROM pg_tables \
    WHERE schemaname = 'public' AND tablename <> 'seaql_migrations'; \
    IF tables IS NOT NULL THEN EXECUTE 'TRUNCATE ' || tables || ' RESTART IDENTITY CASCADE'; END IF; \
    END $$;";

impl Drop for PostgresDb {
    fn drop(&mut self) {
        let claim = self.claim.take();
        if !self.discard.load(Ordering::SeqCst) {
            // Closing the claim's connection frees the slot.
            return;
        }
        // Emptied before the slot is freed. Drop runs inside the test's runtime: use a runtime
        // of its own on another thread, with connections of its own; the claim's connection
        // (of the test's runtime) holds the slot meanwhile.
        let (admin, url, name) = (database_url(&self.server, "postgres"), self.url(), self.name.clone());
        let emptied = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                use sea_orm::ConnectionTrait;
                let admin = sea_orm::Database::connect(admin).await.ok()?;
                admin.execute_unprepared(&end_sessions(&name)).await.ok()?;
                let db = sea_orm::Database::connect(url).await.ok()?;
                db.execute_unprepared(EMPTY).await.ok()
            })
        })
        .join();
        if !matches!(emptied, Ok(Some(_))) {
            eprintln!("could not empty test database {}", self.name);
        }
        drop(claim);
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
        let report = nats_report();
        assert!(report.contains(&format!("pid {pid} on port {port}: running")), "{report}");
        drop(server);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "nats-server {pid} still runs after drop");
        let report = nats_report();
        assert!(report.contains(&format!("pid {pid} on port {port}: gone, refuses connections")), "{report}");
    }

    #[test]
    fn a_port_handed_out_is_not_handed_out_again() {
        let port = free_port();
        assert!(!claim(port), "claimed already: another test process would not get {port}");
        let other = free_port();
        assert_ne!(port, other);
    }

    /// What hung CI for 87 minutes once: two tests chose the same free port, the second
    /// server could not bind it and exited, and its test took the first one's server for its
    /// own (until that one was killed). A server that cannot listen is now noticed.
    #[test]
    fn a_server_whose_port_is_taken_is_not_taken_for_started() {
        let first = NatsServer::start();
        let second = NatsServer::try_start(first.port, Vec::new(), Vec::new());
        let why = second.err().expect("the second server cannot listen on the first one's port");
        assert!(why.contains("exited"), "{why}");
        assert!(TcpStream::connect(("127.0.0.1", first.port)).is_ok(), "the first one still serves");
    }
}
