//! A real browser: Debian's headless Chromium driven over WebDriver (chromedriver, fantoccini).
//! chromedriver runs on a free port as a child of the test, killed by its pid when dropped;
//! Chromium gets a temporary profile and the flags this closed network needs.

use fantoccini::{Client, ClientBuilder, Locator};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `CHROMEDRIVER`, else Debian's. Panics with how to install it: the test needs it.
fn chromedriver() -> PathBuf {
    let path = std::env::var_os("CHROMEDRIVER").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromedriver".into());
    assert!(
        path.is_file(),
        "{} not found: apt-get install chromium chromium-driver, or set CHROMEDRIVER",
        path.display()
    );
    path
}

pub struct Chrome {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Chrome {
    pub async fn start() -> Chrome {
        Chrome::start_in(None).await
    }

    /// A browser whose `Accept-Language` is `languages` (`de`, `fr-CA,es`), or Chromium's
    /// own with `None`.
    pub async fn start_in(languages: Option<&str>) -> Chrome {
        let port = verimail_testkit::free_port();
        let mut driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                let _ = driver.kill();
                panic!("chromedriver did not listen on {port} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("a browser profile folder");
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut options = serde_json::json!({
            "binary": binary,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if let Some(languages) = languages {
            options["prefs"] = serde_json::json!({ "intl.accept_languages": languages });
            if let Some(args) = options["args"].as_array_mut() {
                args.push(format!("--accept-lang={languages}").into());
            }
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = match ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => client,
            Err(e) => {
                let _ = driver.kill();
                panic!("cannot start a Chromium session: {e}");
            }
        };
        Chrome { client, driver, _profile: profile }
    }

    /// Waits (at most 15 s) for the page whose main element has `data-page="kind"`.
    pub async fn wait_for_page(&self, kind: &str) {
        let selector = format!("main[data-page=\"{kind}\"]");
        let found = self.client.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(&selector)).await;
        if let Err(e) = found {
            let source = self.client.source().await.unwrap_or_default();
            panic!("no {kind} page within 15 s ({e}); the browser shows:\n{source}");
        }
    }

    /// Makes the page area `width` CSS pixels wide (and `height` high): the window's frame,
    /// if any, is added.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.expect("set the window size");
        let inner =
            self.client.execute("return [window.innerWidth, window.innerHeight];", vec![]).await.expect("measure");
        let inner: (u32, u32) = serde_json::from_value(inner).expect("two numbers");
        let (extra_w, extra_h) = (width.saturating_sub(inner.0), height.saturating_sub(inner.1));
        if extra_w + extra_h > 0 {
            self.client.set_window_size(width + extra_w, height + extra_h).await.expect("set the window size");
        }
    }

    /// How wide the open page is laid out against how wide the page area is: (scrollWidth,
    /// innerWidth). A page wider than its area scrolls sideways.
    pub async fn layout_width(&self) -> (u64, u64) {
        let script = "return [document.documentElement.scrollWidth, window.innerWidth];";
        let measured = self.client.execute(script, vec![]).await.expect("measure the page");
        serde_json::from_value(measured).expect("two numbers")
    }

    /// Writes a PNG of what the browser shows to the test artifacts folder, as `name`.png; its
    /// path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = crate::artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Runs the accessibility checker axe-core (the `axe.min.js` at `AXE_CORE_JS`, which
    /// `scripts/axe-core.sh` installs) on the open page against WCAG 2.0, 2.1 and 2.2 A and AA
    /// and axe's best practices: its violations (rule, impact, help, the elements) and how
    /// many rules passed. Injected over WebDriver, so the page's own policy (no scripts) holds
    /// for everything else.
    pub async fn audit(&self) -> Audit {
        static AXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let source = AXE.get_or_init(|| {
            let path = std::env::var("AXE_CORE_JS").expect("AXE_CORE_JS: the path of axe.min.js (scripts/axe-core.sh)");
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (scripts/axe-core.sh installs it)"))
        });
        self.client.execute(source, vec![]).await.expect("load axe-core into the page");
        let run = r#"
            const done = arguments[arguments.length - 1];
            const tags = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'];
            axe.run(document, { runOnly: { type: 'tag', values: tags } })
                .then(r => done({
                    version: axe.version,
                    passes: r.passes.length,
                    incomplete: r.incomplete.map(v => v.id),
                    violations: r.violations.map(v => ({
                        id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => n.target.join(' ')),
                    })),
                }))
                .catch(e => done({ error: String(e) }));
        "#;
        let result = self.client.execute_async(run, vec![]).await.expect("run axe-core");
        if let Some(error) = result.get("error") {
            panic!("axe-core failed: {error}");
        }
        serde_json::from_value(result).expect("axe-core's results")
    }

    /// Ends the WebDriver session (closing Chromium); dropping then stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What axe-core found on a page.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Audit {
    pub version: String,
    /// Rules that held.
    pub passes: usize,
    /// Rules axe-core could not decide by itself (it asks a person to look).
    pub incomplete: Vec<String>,
    pub violations: Vec<Violation>,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Violation {
    pub id: String,
    /// minor, moderate, serious or critical.
    pub impact: Option<String>,
    pub help: String,
    pub nodes: Vec<String>,
}

impl Audit {
    /// The violations of impact serious or critical.
    pub fn serious(&self) -> Vec<&Violation> {
        self.violations.iter().filter(|v| matches!(v.impact.as_deref(), Some("serious" | "critical"))).collect()
    }
}
