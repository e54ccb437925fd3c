//! The WebDriver harness the browser tests share: chromedriver in its own process group ([`Driver`]), one
//! headless Chromium session with a small W3C WebDriver client on reqwest ([`Session`]), and what the tests
//! check screenshots with. Needs `chromium` and `chromedriver` on PATH (`scripts/install-deps.sh browser`); each
//! test starts with `ota_testkit::tools::require_all(&["chromium", "chromedriver"])`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub(crate) fn tool(name: &str) -> PathBuf {
    ota_testkit::tools::find(name).unwrap_or_else(|| panic!("{name} is not on PATH"))
}
/// How long a page may take to show a change. Generous because CI runs these beside QEMU on two cores; a wait
/// ends as soon as the change shows, and the latencies are printed, not asserted.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);
/// W3C WebDriver's key for element references.
pub(crate) const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver in its own process group; the whole group (chromedriver and the browsers it started) is killed
/// on drop.
pub(crate) struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Driver {
    pub(crate) async fn start(log: &Path) -> Driver {
        use std::os::unix::process::CommandExt;
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(tool("chromedriver"))
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    let v: Value = r.json().await.unwrap();
                    if v["value"]["ready"] == json!(true) {
                        return driver;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn session(&self, profile: &Path) -> Session {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": tool("chromium"),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,800", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let r = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .expect("new session");
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "cannot start Chromium: {v}");
        let id = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        let session = Session {
            url: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
        };
        // --window-size includes the browser's frame: make the page's viewport exactly 1280×800.
        session.viewport(1280, 800).await;
        session
    }
}

/// chromedriver and one Chromium session, their log and profile kept in `dir`.
pub(crate) async fn open(dir: &Path) -> (Driver, Session) {
    let driver = Driver::start(&dir.join("chromedriver.log")).await;
    let session = driver.session(&dir.join("chromium-profile")).await;
    (driver, session)
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Kill the process group we created (chromedriver and every browser process it started), by its id.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
pub(crate) struct Session {
    url: String,
    http: reqwest::Client,
}

impl Session {
    pub(crate) async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        self.try_cmd(method.clone(), path, body)
            .await
            .unwrap_or_else(|(status, v)| panic!("webdriver {method} {path}: {status} {v}"))
    }

    /// A WebDriver command; the error's status and body when it fails.
    pub(crate) async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (reqwest::StatusCode, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err((status, v))
        }
    }

    /// Makes the page's viewport exactly `width`×`height` CSS pixels (a phone is 390 wide and "mobile").
    pub(crate) async fn viewport(&self, width: u32, height: u32) {
        let metrics = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600});
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": metrics})),
        )
        .await;
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs a script (a function body; `arguments[i]` are `args`) and returns its value.
    pub(crate) async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    pub(crate) async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {css}: {v}"))
            .to_string()
    }

    /// Clicks the element `css` matches; a live page may redraw it between finding and clicking, so a stale
    /// element is looked up again (a few times).
    pub(crate) async fn click(&self, css: &str) {
        for attempt in 0.. {
            let id = self.find(css).await;
            match self
                .try_cmd(
                    reqwest::Method::POST,
                    &format!("/element/{id}/click"),
                    Some(json!({})),
                )
                .await
            {
                Ok(_) => return,
                Err((_, v)) if attempt < 5 && v["value"]["error"] == "stale element reference" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((status, v)) => panic!("webdriver click {css}: {status} {v}"),
            }
        }
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Empties an input or textarea.
    pub(crate) async fn clear(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
    }

    /// Waits until `css` matches an element and clicks it.
    pub(crate) async fn click_when_there(&self, css: &str) {
        self.wait_for(
            css,
            PATIENCE,
            "return document.querySelector(arguments[0]) !== null",
            json!([css]),
            |v| v == true,
        )
        .await;
        self.click(css).await;
    }

    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        base64_decode(v.as_str().expect("screenshot is base64"))
    }

    /// Saves a screenshot as `target/screenshots/NAME.png`, and as `docs/screenshots/NAME.png` too when
    /// `OTA_REFRESH_SCREENSHOTS` is set (how the docs' pictures are refreshed), so that a test run leaves the
    /// tree as it found it. Returns the picture's size.
    pub(crate) async fn save_screenshot(&self, name: &str) -> (u32, u32) {
        let png = self.screenshot().await;
        let (w, h) = png_size(&png);
        let mut dirs = vec![target_dir().join("screenshots")];
        if std::env::var_os("OTA_REFRESH_SCREENSHOTS").is_some() {
            dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"));
        }
        for dir in dirs {
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}.png"));
            std::fs::write(&path, &png).unwrap();
            println!(
                "screenshot {} ({w}×{h}, {} bytes)",
                path.display(),
                png.len()
            );
        }
        (w, h)
    }

    /// Opens the console at `base` signed in with `token` (through the URL fragment) and waits until its event
    /// stream is live.
    pub(crate) async fn open_console(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/#token={token}")).await;
        self.until_live().await;
    }

    /// Waits until the console's event stream is live.
    pub(crate) async fn until_live(&self) {
        self.wait_for(
            "the live indicator",
            PATIENCE,
            "return document.getElementById('conn').textContent",
            json!([]),
            |v| v == "live",
        )
        .await;
    }

    /// Polls `script` (which returns a value) until `pred` holds; returns the value and the time it took.
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        script: &str,
        args: Value,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let start = Instant::now();
        loop {
            let v = self.js(script, args.clone()).await;
            if pred(&v) {
                return (v, start.elapsed());
            }
            if start.elapsed() > limit {
                let page = self.js("return document.body.innerText", json!([])).await;
                panic!(
                    "timed out after {limit:?} waiting for {what}; last value {v}; page text:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub(crate) async fn close(&self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

pub(crate) fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Width and height from a PNG's IHDR, after checking the signature.
pub(crate) fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 1000,
        "screenshot is suspiciously small: {} bytes",
        png.len()
    );
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "screenshot is not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

pub(crate) fn target_dir() -> PathBuf {
    // tests run with the package directory as cwd; the workspace's target/ is two levels up.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../target"))
}
