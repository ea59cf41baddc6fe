//! A real MTA for tests: Debian's Postfix, with a configuration directory, queue and log of its
//! own under a temporary folder, listening on a loopback port. It relays everything to one
//! SMTP server (the recipients' side) and mail for one domain (the bounce domain) to another,
//! retries quickly, and sends its own delivery status notifications, delay warnings included.
//! Its master process runs as the test's child in its own process group and is killed by its
//! pid when the handle drops; its children follow it.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MASTER: &str = "/usr/lib/postfix/sbin/master";

pub struct Postfix {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Postfix {
    /// Listens on `port` (chosen with `free_port` before the stack that sends through it),
    /// relays to `relay` (the recipients' SMTP server), and mail for `bounce_domain` to
    /// `bounces` (email-service's bounce listener). Waits (at most 20 s) until it answers.
    pub fn start_on(port: u16, relay: SocketAddr, bounce_domain: &str, bounces: SocketAddr) -> Postfix {
        assert!(
            Path::new(MASTER).is_file(),
            "Postfix is not installed: apt-get install postfix (with postfix/main_mailer_type 'No configuration')"
        );
        let dir = tempfile::tempdir().expect("a folder for Postfix");
        let root = dir.path();
        // The postfix user walks to its queue and data folders.
        set_mode(root, 0o755);
        for sub in ["conf", "queue", "data"] {
            std::fs::create_dir_all(root.join(sub)).expect("a Postfix folder");
        }
        let chown = Command::new("chown").args(["postfix:postfix"]).arg(root.join("data")).status();
        assert!(chown.is_ok_and(|s| s.success()), "chown the Postfix data folder (the tests run as root)");
        std::fs::write(root.join("conf/main.cf"), main_cf(root, relay, bounce_domain, bounces)).expect("main.cf");
        std::fs::write(root.join("conf/master.cf"), master_cf(port)).expect("master.cf");
        // Creates the queue's folders with their owners and modes, and checks the rest.
        let check =
            Command::new("postfix").arg("-c").arg(root.join("conf")).arg("check").output().expect("postfix check");
        assert!(check.status.success(), "postfix check: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new(MASTER)
            .arg("-c")
            .arg(root.join("conf"))
            // In the foreground, as our child; its own process group, which it kills on exit.
            .arg("-d")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Postfix's master");
        let postfix = Postfix { port, child, dir };
        postfix.wait_until_listening(Duration::from_secs(20));
        postfix
    }

    /// What Postfix logged so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn wait_until_listening(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "Postfix did not listen within {limit:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // SIGTERM: the master stops its children (its process group) and exits.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        let _ = self.child.wait();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn main_cf(root: &Path, relay: SocketAddr, bounce_domain: &str, bounces: SocketAddr) -> String {
    let path = |sub: &str| -> PathBuf { root.join(sub) };
    format!(
        "compatibility_level = 3.6
myhostname = mta.verimail.test
mydomain = verimail.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:no local delivery here
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
queue_directory = {queue}
data_directory = {data}
maillog_file = {log}
maillog_file_prefixes = {root}
relayhost = [{relay_ip}]:{relay_port}
transport_maps = inline:{{ {bounce_domain}=smtp:[{bounce_ip}]:{bounce_port} }}
smtp_dns_support_level = disabled
smtp_tls_security_level = none
# Retry within seconds, and warn of a delay after one: a test cannot wait for hours.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 1s
biff = no
smtpd_banner = $myhostname ESMTP
",
        queue = path("queue").display(),
        data = path("data").display(),
        log = path("maillog").display(),
        root = root.display(),
        relay_ip = relay.ip(),
        relay_port = relay.port(),
        bounce_ip = bounces.ip(),
        bounce_port = bounces.port(),
    )
}

fn master_cf(port: u16) -> String {
    format!(
        "127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"
    )
}
