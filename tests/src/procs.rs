//! The stack as separate processes, started from the real binaries with the environment an
//! operator would give them, so that a test can SIGKILL a service and start it again.
//! user-service reaches NATS through a [`TcpDoor`], so a test can cut it off the broker alone.
//! Every process is killed by its pid when the stack drops.
//!
//! [`ProcessStack::start_scaled`] starts the production shape instead: a cluster of
//! nats-servers with replicated streams, and more than one instance of every part on the same
//! databases (the benchmark's scale-out rows).

use crate::smtp::SmtpServer;
use crate::{Operator, Ops};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verimail_proto::auth::v1::auth_service_client::AuthServiceClient;
use verimail_proto::email::v1::email_service_client::EmailServiceClient;
use verimail_proto::user::v1::user_service_client::UserServiceClient;
use verimail_testkit::{NatsCluster, NatsServer, TcpDoor, free_port};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    User,
    Auth,
    Email,
    Gateway,
}

impl Part {
    /// In the order they start: each after the parts whose addresses it is given.
    pub const ALL: [Part; 4] = [Part::Auth, Part::User, Part::Gateway, Part::Email];

    /// The variable that names the address it listens on.
    fn address_variable(self) -> &'static str {
        match self {
            Part::User => "USER_GRPC_ADDR",
            Part::Auth => "AUTH_GRPC_ADDR",
            Part::Email => "EMAIL_GRPC_ADDR",
            Part::Gateway => "GATEWAY_HTTP_ADDR",
        }
    }

    /// Its database in a stack ("user", "auth", "email"); the gateway has none.
    pub fn database(self) -> Option<&'static str> {
        match self {
            Part::User => Some("user"),
            Part::Auth => Some("auth"),
            Part::Email => Some("email"),
            Part::Gateway => None,
        }
    }

    pub fn binary(self) -> &'static str {
        match self {
            Part::User => "user-service",
            Part::Auth => "auth-service",
            Part::Email => "email-service",
            Part::Gateway => "gateway",
        }
    }
}

/// Where cargo put the workspace's binaries: `VERIMAIL_BIN_DIR` (the benchmark points it at
/// the release build), else beside this test's own executable's folder
/// (`target/debug/deps/..`). `just test` builds them before the tests run.
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("VERIMAIL_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("the test's own path");
            exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..").to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --bins; just test does)",
        path.display()
    );
    path
}

/// Runs a workspace binary once with `args` and exactly `env` (nothing inherited), for at most
/// `limit` (killed if it runs longer): how it ended and what it printed.
pub async fn run_binary<'a>(
    name: &str,
    args: &[&str],
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    limit: Duration,
) -> std::process::Output {
    let run = tokio::process::Command::new(binary(name)).args(args).env_clear().envs(env).kill_on_drop(true).output();
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} did not exit within {limit:?}"))
        .expect("the binary runs")
}

/// What a process printed, stdout then stderr.
pub fn printed(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

pub struct ProcessStack {
    pub nats: NatsServer,
    /// The other nodes of a NATS cluster ([`ProcessStack::start_scaled`]); none by default.
    pub more_nats: Vec<NatsServer>,
    pub smtp: SmtpServer,
    /// The door between user-service and NATS.
    pub user_nats_door: Arc<TcpDoor>,
    pub users: UserServiceClient<Ops>,
    pub auth: AuthServiceClient<Ops>,
    /// auth-service as email-service calls it (IssueVerificationToken).
    pub issuer: AuthServiceClient<Ops>,
    pub emails: EmailServiceClient<Ops>,
    pub gateway_url: String,
    pub dir: tempfile::TempDir,
    env: Env,
    children: HashMap<Part, Child>,
    /// The services' databases (PostgreSQL ones are dropped with the stack).
    databases: crate::Databases,
    /// Instances 2, 3, … of every part ([`ProcessStack::start_scaled`]).
    more: Vec<Instance>,
    /// Where the parts' binaries are (`None`: this build's, [`binary`]).
    binaries: Option<PathBuf>,
}

/// Another instance of every part, on the same databases and NATS as the first, each part
/// calling the services of its own instance.
pub struct Instance {
    pub users: UserServiceClient<Ops>,
    pub gateway_url: String,
    children: Vec<(Part, Child)>,
    env: Env,
}

/// How many nats-servers and instances [`ProcessStack::start_scaled`] starts.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// 1, or a cluster of this many with every stream on up to 3 of them.
    pub nats_nodes: usize,
    /// Instances of every part.
    pub instances: usize,
}

/// The door user-service reaches NATS through (a test closes it to cut user-service off), and
/// the NATS URL that leads through it to the first node.
fn user_nats_door(nats: &NatsServer, more_nats: &[NatsServer]) -> (std::sync::Arc<TcpDoor>, String) {
    let nats_port: u16 = nats.url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("NATS port");
    let door = TcpDoor::open(([127, 0, 0, 1], nats_port).into());
    let url = std::iter::once(format!("nats://127.0.0.1:{}", door.port()))
        .chain(more_nats.iter().map(NatsServer::url))
        .collect::<Vec<_>>()
        .join(",");
    (door, url)
}

impl ProcessStack {
    pub async fn start() -> ProcessStack {
        ProcessStack::start_with_env(&[]).await
    }

    /// With `extra` variables set for every part.
    pub async fn start_with_env(extra: &[(&str, String)]) -> ProcessStack {
        ProcessStack::start_scaled(Scale { nats_nodes: 1, instances: 1 }, extra).await
    }

    /// `scale.nats_nodes` nats-servers and `scale.instances` instances of every part, with
    /// `extra` variables set for every part. user-service's door leads to the first node.
    pub async fn start_scaled(scale: Scale, extra: &[(&str, String)]) -> ProcessStack {
        ProcessStack::start_scaled_from(scale, extra, None).await
    }

    /// As [`ProcessStack::start_scaled`], every part started from the binaries in `binaries`
    /// (another build of Verimail; `None`: this one's).
    pub async fn start_scaled_from(scale: Scale, extra: &[(&str, String)], binaries: Option<PathBuf>) -> ProcessStack {
        let mut cluster = NatsCluster::start(scale.nats_nodes);
        let nats = cluster.nodes.remove(0);
        let more_nats = std::mem::take(&mut cluster.nodes);
        let nats_url = std::iter::once(&nats).chain(&more_nats).map(NatsServer::url).collect::<Vec<_>>().join(",");
        let smtp = SmtpServer::start();
        let dir = tempfile::tempdir().expect("temporary data folder");
        let (user_nats_door, user_nats_url) = user_nats_door(&nats, &more_nats);
        let [user, auth, email, http] = [free_port(), free_port(), free_port(), free_port()];
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let gateway_url = format!("http://{}", addr(http));
        let databases = crate::Databases::create(crate::on_postgres()).await;
        let db = |service: &str| databases.url(dir.path(), service);
        let token_key = verimail_auth::links::TokenKeys::generate().expect("token key").current_paserk();
        let signing_key = verimail_auth::access::SigningKeys::generate().expect("signing key").current_paserk();

        // What each part is given: the process stack's options, then this stack's addresses,
        // NATS and the caller's `extra` (for every part).
        let options = crate::StackOptions { nats_nodes: scale.nats_nodes, ..crate::StackOptions::for_processes() };
        let with = |part: Part, own: Vec<(&str, String)>| {
            let mut env: Vec<(String, String)> =
                options.vars_for(part).into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
            let stack = [
                ("NATS_URL", nats_url.clone()),
                ("USER_GRPC_ADDR", addr(user)),
                ("AUTH_GRPC_ADDR", addr(auth)),
                ("EMAIL_GRPC_ADDR", addr(email)),
                ("GATEWAY_HTTP_ADDR", addr(http)),
                ("RUST_LOG", "info,sqlx=warn,async_nats=warn,h2=warn".to_owned()),
                ("METRICS_ADDR", addr(free_port())),
            ];
            let extra = extra.iter().map(|(name, value)| (*name, value.clone()));
            env.extend(stack.into_iter().chain(own).chain(extra).map(|(name, value)| (name.to_owned(), value)));
            env
        };
        let user_own = vec![("NATS_URL", user_nats_url), ("DATABASE_URL", db("user"))];
        let auth_own =
            vec![("DATABASE_URL", db("auth")), ("AUTH_TOKEN_KEYS", token_key), ("AUTH_SIGNING_KEYS", signing_key)];
        let email_own =
            vec![("DATABASE_URL", db("email")), ("SMTP_URL", smtp.url()), ("PUBLIC_BASE_URL", gateway_url.clone())];
        let env = HashMap::from([
            (Part::User, with(Part::User, user_own)),
            (Part::Auth, with(Part::Auth, auth_own)),
            (Part::Email, with(Part::Email, email_own)),
            (Part::Gateway, with(Part::Gateway, vec![])),
        ]);
        let operator = Operator::new();
        let channel = |port: u16| {
            operator.channel(verimail_server::tls::GrpcTls::off().channel("test", &addr(port)).expect("channel"))
        };
        let mut stack = ProcessStack {
            nats,
            more_nats,
            smtp,
            user_nats_door,
            users: UserServiceClient::new(channel(user)),
            auth: AuthServiceClient::new(channel(auth)),
            issuer: AuthServiceClient::new(
                crate::Operator::email_service()
                    .channel(verimail_server::tls::GrpcTls::off().channel("test", &addr(auth)).expect("channel")),
            ),
            emails: EmailServiceClient::new(channel(email)),
            gateway_url,
            dir,
            env,
            children: HashMap::new(),
            databases,
            more: Vec::new(),
            binaries,
        };
        for part in Part::ALL {
            stack.start_part_first(part).await;
        }
        stack.connect_clients();
        for _ in 1..scale.instances {
            let instance = stack.start_instance().await;
            stack.more.push(instance);
        }
        stack
    }

    /// Another instance of every part: the first's variables with fresh ports throughout,
    /// so its parts call each other.
    async fn start_instance(&self) -> Instance {
        let mut env = self.env.clone();
        for part in Part::ALL {
            move_to_fresh_ports(&mut env, part);
        }
        let mut children = Vec::new();
        for part in Part::ALL {
            let name = format!("{}-{}", part.binary(), self.more.len() + 2);
            let address = var(&env, part, part.address_variable());
            match spawn_part(part, &env[&part], self.dir.path(), &name, &address, self.program(part)).await {
                Ok(child) => children.push((part, child)),
                Err(log) => panic!("{name} exited; log:\n{log}"),
            }
        }
        let users = var(&env, Part::User, Part::User.address_variable());
        let channel = verimail_server::tls::GrpcTls::off().channel("test", &users).expect("channel");
        let gateway = var(&env, Part::Gateway, Part::Gateway.address_variable());
        Instance {
            users: UserServiceClient::new(Operator::new().channel(channel)),
            gateway_url: format!("http://{gateway}"),
            children,
            env,
        }
    }

    /// The binary `part` starts from.
    fn program(&self, part: Part) -> PathBuf {
        match &self.binaries {
            Some(dir) => dir.join(part.binary()),
            None => binary(part.binary()),
        }
    }

    /// Replaces `part` of instance `index` (0: the first) with this build's binary, as a
    /// rolling upgrade does: SIGTERM, its exit (at most 30 s), then the new binary started with
    /// the same variables and waited for until it answers (at most 30 s). Later starts of
    /// any part use this build's binaries too.
    pub async fn upgrade(&mut self, part: Part, index: usize) {
        self.binaries = None;
        if index == 0 {
            let status = self.terminate(part);
            assert!(status.success(), "{} exited with {status} on SIGTERM", part.binary());
            return self.start_part(part).await;
        }
        let name = format!("{}-{}", part.binary(), index + 1);
        let dir = self.dir.path().to_owned();
        let instance = &mut self.more[index - 1];
        let at = instance.children.iter().position(|(each, _)| *each == part).expect("a running part");
        let (_, mut child) = instance.children.remove(at);
        let log = || std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let status = sigterm_and_wait(&mut child, &name, log);
        assert!(status.success(), "{name} exited with {status} on SIGTERM");
        let address = var(&instance.env, part, part.address_variable());
        let child = spawn_part(part, &instance.env[&part], &dir, &name, &address, binary(part.binary()))
            .await
            .unwrap_or_else(|log| panic!("{name} (upgraded) exited; log:\n{log}"));
        instance.children.push((part, child));
    }

    /// A client of every instance's user-service, the first's first.
    pub fn user_clients(&self) -> Vec<UserServiceClient<Ops>> {
        std::iter::once(&self.users).chain(self.more.iter().map(|instance| &instance.users)).cloned().collect()
    }

    /// Every instance's gateway URL, the first's first.
    pub fn gateway_urls(&self) -> Vec<String> {
        std::iter::once(&self.gateway_url)
            .chain(self.more.iter().map(|instance| &instance.gateway_url))
            .cloned()
            .collect()
    }

    /// SIGKILLs `part` in every instance.
    pub fn kill_everywhere(&mut self, part: Part) {
        self.kill(part);
        for instance in &mut self.more {
            instance.children.iter_mut().filter(|(each, _)| *each == part).for_each(|(_, child)| end(child));
            instance.children.retain(|(each, _)| *each != part);
        }
    }

    /// Every process of the stack, by binary name: each instance's parts and each nats-server.
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        let first = Part::ALL.iter().filter_map(|&part| Some((part.binary(), self.pid(part)?)));
        let more = self.more.iter().flat_map(|i| i.children.iter().map(|(part, child)| (part.binary(), child.id())));
        let nats = std::iter::once(&self.nats).chain(&self.more_nats).map(|node| ("nats-server", node.pid()));
        first.chain(more).chain(nats).collect()
    }

    /// The test's clients and the gateway's URL, at the addresses the parts listen on.
    fn connect_clients(&mut self) {
        let channel = |operator: Operator, addr: String| {
            operator.channel(verimail_server::tls::GrpcTls::off().channel("test", &addr).expect("channel"))
        };
        self.users = UserServiceClient::new(channel(Operator::new(), self.grpc_addr(Part::User)));
        self.auth = AuthServiceClient::new(channel(Operator::new(), self.grpc_addr(Part::Auth)));
        self.issuer = AuthServiceClient::new(channel(Operator::email_service(), self.grpc_addr(Part::Auth)));
        self.emails = EmailServiceClient::new(channel(Operator::new(), self.grpc_addr(Part::Email)));
        self.gateway_url = format!("http://{}", self.var(Part::Gateway, Part::Gateway.address_variable()));
    }

    /// The first start of `part`. A port chosen for it may have been taken by another test
    /// before it bound it (free ports are only free when chosen): then it gets fresh ones, in
    /// every part's configuration, which is safe as the parts that name it start after it.
    async fn start_part_first(&mut self, part: Part) {
        self.start_part_with(part, true).await
    }

    fn move_to_fresh_ports(&mut self, part: Part) {
        move_to_fresh_ports(&mut self.env, part);
    }

    /// Starts `part` again (after `kill` or `terminate`) and waits (at most 30 s) until it
    /// answers: SERVING on grpc.health.v1, or 200 on the gateway's /healthz. The others know
    /// its ports, so it keeps them: if another test holds one for a moment as it binds (tests
    /// probe ports by binding them), it is started again.
    pub async fn start_part(&mut self, part: Part) {
        self.start_part_with(part, false).await
    }

    /// Up to three starts of `part`, while it finds a port taken: on fresh ports (`first`)
    /// or, 200 ms later, on the same.
    async fn start_part_with(&mut self, part: Part, first: bool) {
        for attempt in 1..=3 {
            match self.try_start_part(part).await {
                Ok(()) => return,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    if first {
                        self.move_to_fresh_ports(part);
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Err(log) => panic!("{} exited; log:\n{log}", part.binary()),
            }
        }
    }

    /// One start of `part`: Ok once it answers, what it logged if it exits first.
    async fn try_start_part(&mut self, part: Part) -> Result<(), String> {
        let address = self.var(part, part.address_variable());
        let child =
            spawn_part(part, &self.env[&part], self.dir.path(), part.binary(), &address, self.program(part)).await?;
        self.children.insert(part, child);
        Ok(())
    }

    /// The process id of a running part.
    pub fn pid(&self, part: Part) -> Option<u32> {
        self.children.get(&part).map(Child::id)
    }

    /// SIGKILL, by pid: no shutdown hook runs.
    pub fn kill(&mut self, part: Part) {
        if let Some(mut child) = self.children.remove(&part) {
            end(&mut child);
        }
    }

    /// SIGTERM, then waits (at most 30 s) for the process to exit; returns its exit status.
    pub fn terminate(&mut self, part: Part) -> std::process::ExitStatus {
        let mut child = self.children.remove(&part).expect("a running part");
        sigterm_and_wait(&mut child, part.binary(), || self.log(part))
    }

    /// The address a part's gRPC server listens on.
    pub fn grpc_addr(&self, part: Part) -> String {
        assert!(part != Part::Gateway, "the gateway serves HTTP");
        self.var(part, part.address_variable())
    }

    /// Runs `part`'s binary once more, beside the running one, with its environment and
    /// `args` (a mode such as `--health-check`), for at most 20 s: success, and what it printed.
    pub async fn run_beside(&self, part: Part, args: &[&str]) -> (bool, String) {
        let env = self.env[&part].iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let output = run_binary(part.binary(), args, env, Duration::from_secs(20)).await;
        (output.status.success(), printed(&output))
    }

    /// The database URL of a service ("user", "auth" or "email").
    pub fn database_url(&self, service: &str) -> String {
        self.databases.url(self.dir.path(), service)
    }

    pub fn log(&self, part: Part) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", part.binary()))).unwrap_or_default()
    }

    /// The URL of `part`'s metrics.
    pub fn metrics_url(&self, part: Part) -> String {
        format!("http://{}/metrics", self.var(part, "METRICS_ADDR"))
    }

    /// Sets a variable of `part` for its next start (`start_part`).
    pub fn set_var(&mut self, part: Part, name: &str, value: &str) {
        let env = self.env.get_mut(&part).expect("a part");
        env.retain(|(k, _)| k != name);
        env.push((name.to_owned(), value.to_owned()));
    }

    /// A variable `part` is started with.
    pub fn var(&self, part: Part, name: &str) -> String {
        var(&self.env, part, name)
    }
}

/// Each part's variables.
type Env = HashMap<Part, Vec<(String, String)>>;

/// A variable `part` is started with (the last setting wins).
fn var(env: &Env, part: Part, name: &str) -> String {
    env[&part].iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()).expect("a configured variable")
}

/// Gives `part` fresh ports: its address, everywhere it is named, and its metrics address.
fn move_to_fresh_ports(env: &mut Env, part: Part) {
    for (variable, everywhere) in [(part.address_variable(), true), ("METRICS_ADDR", false)] {
        let old = var(env, part, variable);
        let new = format!("127.0.0.1:{}", free_port());
        for (each, vars) in env.iter_mut() {
            if everywhere || *each == part {
                vars.iter_mut().for_each(|(_, value)| *value = value.replace(&old, &new));
            }
        }
    }
}

/// SIGKILL, by pid, and reaped.
fn end(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM to `child` (`name`), then waits (at most 30 s) for it to exit; its exit status.
/// Past the wait it is killed, and the panic shows what it logged (`log`).
fn sigterm_and_wait(child: &mut Child, name: &str, log: impl FnOnce() -> String) -> std::process::ExitStatus {
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
    assert!(sent.success(), "kill -TERM {}", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() >= deadline {
            end(child);
            panic!("{name} did not exit within 30 s of SIGTERM; log:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `part`'s binary with `env` in `dir`, its output appended to `<name>.log` there, and
/// waits (at most 30 s) until it answers at `address`: SERVING on grpc.health.v1, or 200 on
/// the gateway's /healthz. What it logged this time if it exits first.
async fn spawn_part(
    part: Part,
    env: &[(String, String)],
    dir: &Path,
    name: &str,
    address: &str,
    program: PathBuf,
) -> Result<Child, String> {
    let log_path = dir.join(format!("{name}.log"));
    let log = OpenOptions::new().create(true).append(true).open(&log_path).expect("log file");
    // The log holds the earlier runs of this part too.
    let earlier = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
    let logged = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut child = Command::new(program)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(part, address).await {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("({status})\n{}", logged().get(earlier..).unwrap_or_default()));
        }
        if Instant::now() >= deadline {
            end(&mut child);
            panic!("{name} did not answer within 30 s; log:\n{}", logged());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(child)
}

/// Whether `part` answers at `address`.
async fn answers(part: Part, address: &str) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let service = match part {
        Part::User => "verimail.user.v1.UserService",
        Part::Auth => "verimail.auth.v1.AuthService",
        Part::Email => "verimail.email.v1.EmailService",
        Part::Gateway => {
            let url = format!("http://{address}/healthz");
            return reqwest::get(url).await.is_ok_and(|r| r.status().is_success());
        }
    };
    let Ok(channel) = verimail_server::tls::GrpcTls::off().channel("test", address) else {
        return false;
    };
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await;
    reply.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
}

impl Drop for ProcessStack {
    fn drop(&mut self) {
        for part in Part::ALL {
            self.kill_everywhere(part);
        }
        // A failing test shows what its parts said (their log files go with the stack).
        if std::thread::panicking() {
            for part in Part::ALL {
                let log = self.log(part);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                eprintln!("--- the last 40 lines {} logged ---\n{tail}", part.binary());
            }
        }
    }
}
