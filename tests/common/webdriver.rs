//! A tiny W3C WebDriver client for Debian's `chromedriver` driving Debian's `chromium` headless, over loopback:
//! JSON over HTTP with [`super::http`], answers read with [`super::json`]. Enough for a page test: open a URL,
//! find elements by CSS selector, click, type (a file path into `<input type=file>` too), read text, run a
//! script, resize the window, take a PNG screenshot.
//!
//! [`Browser::start`] runs chromedriver (a [`Proc`]: its own process group, so chromium, its child, dies with it
//! by PID) and opens a session with a fresh profile in the test's directory and every background fetch off: the
//! browser talks to 127.0.0.1 only.

use std::path::Path;
use std::time::{Duration, Instant};

use super::http;
use super::json::{self, quote, Json};
use super::{free_port, lifetime_until, require_tool, wait_port_open, Proc};

/// The W3C key of an element reference in a WebDriver answer.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest a single WebDriver command may take (a session start loads chromium).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// chromedriver and one browser session.
pub struct Browser {
    driver: Proc,
    port: u16,
    session: String,
}

/// A found element.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless chromium session with a `width`×`height` window.
    pub fn start(dir: &Path, width: u32, height: u32, deadline: Instant) -> Browser {
        require_tool("chromedriver", "chromium-driver");
        require_tool("chromium", "chromium");
        let port = free_port();
        let mut cmd = std::process::Command::new("chromedriver");
        cmd.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1");
        // Chromium's crash database and caches go under XDG dirs, not the profile: keep them in the test's dir.
        cmd.env("XDG_CONFIG_HOME", dir.join("xdg-config")).env("XDG_CACHE_HOME", dir.join("xdg-cache"));
        let driver = Proc::spawn("chromedriver", &cmd, &dir.join("logs"), lifetime_until(deadline));
        wait_port_open(port, deadline, "chromedriver");
        let profile = dir.join("chromium-profile");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
            // Loopback only: nothing in the background, and no name resolves.
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-default-apps".into(),
            "--disable-domain-reliability".into(),
            "--disable-client-side-phishing-detection".into(),
            "--no-pings".into(),
            "--disable-breakpad".into(),
            "--disable-crash-reporter".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into(),
        ];
        let args = args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(",");
        let caps = format!(
            r#"{{"capabilities":{{"alwaysMatch":{{"browserName":"chrome","goog:chromeOptions":{{"binary":"/usr/bin/chromium","args":[{args}]}}}}}}}}"#
        );
        let mut b = Browser { driver, port, session: String::new() };
        let value = b.command("POST", "/session", &caps).unwrap_or_else(|e| {
            b.driver.dump_logs();
            panic!("chromedriver could not start a chromium session: {e}")
        });
        b.session = value.get("sessionId").and_then(Json::as_str).expect("a sessionId in the new session").to_string();
        b
    }

    /// One WebDriver command: its `value`, or the WebDriver error as text.
    fn command(&self, method: &str, path: &str, body: &str) -> Result<Json, String> {
        let headers = [("Content-Type", "application/json; charset=utf-8")];
        let r = http::request_within(self.port, method, path, &headers, body.as_bytes(), COMMAND_TIMEOUT)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let text = r.text();
        let j = json::parse(&text).map_err(|e| format!("{method} {path}: bad JSON ({e}): {text}"))?;
        let value = j.get("value").cloned().unwrap_or(Json::Null);
        if r.status != 200 {
            let error = value.get("error").and_then(Json::as_str).unwrap_or("?");
            let message = value.get("message").and_then(Json::as_str).unwrap_or("");
            let first = message.lines().next().unwrap_or("");
            return Err(format!("{method} {path}: HTTP {}: {error}: {first}", r.status));
        }
        Ok(value)
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    #[track_caller]
    fn must(&self, method: &str, rest: &str, body: &str) -> Json {
        self.command(method, &self.session_path(rest), body).unwrap_or_else(|e| panic!("webdriver: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", &format!(r#"{{"url":{}}}"#, quote(url)));
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.must("POST", "/window/rect", &format!(r#"{{"width":{width},"height":{height}}}"#));
    }

    /// Every element matching a CSS selector (none is not an error).
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.must("POST", "/elements", &format!(r#"{{"using":"css selector","value":{}}}"#, quote(css)));
        let list = v.as_array().unwrap_or(&[]);
        list.iter()
            .map(|e| element_of(e).unwrap_or_else(|| panic!("webdriver: not an element reference: {e:?}")))
            .collect()
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        self.find_all(css).into_iter().next()
    }

    /// Waits until an element matching `css` is there and displayed.
    #[track_caller]
    pub fn wait_visible(&self, css: &str, deadline: Instant) -> Element {
        super::wait_for(deadline, &format!("{css} to be displayed"), || {
            self.find(css).filter(|e| self.try_displayed(e).unwrap_or(false))
        })
    }

    fn try_displayed(&self, e: &Element) -> Result<bool, String> {
        self.command("GET", &self.session_path(&format!("/element/{}/displayed", e.0)), "")
            .map(|v| v.as_bool().unwrap_or(false))
    }

    pub fn displayed(&self, e: &Element) -> bool {
        self.try_displayed(e).unwrap_or(false)
    }

    /// Clicks an element (it must be displayed and enabled).
    #[track_caller]
    pub fn click(&self, e: &Element) {
        self.must("POST", &format!("/element/{}/click", e.0), "{}");
    }

    /// Types `text` into an element; for `<input type=file>` the text is a file path.
    #[track_caller]
    pub fn send_keys(&self, e: &Element, text: &str) {
        self.must("POST", &format!("/element/{}/value", e.0), &format!(r#"{{"text":{}}}"#, quote(text)));
    }

    /// An element's rendered text.
    pub fn text(&self, e: &Element) -> String {
        self.must("GET", &format!("/element/{}/text", e.0), "").as_str().unwrap_or("").to_string()
    }

    /// Runs `script` (a function body; `return` gives the answer) in the page.
    #[track_caller]
    pub fn eval(&self, script: &str) -> Json {
        self.must("POST", "/execute/sync", &format!(r#"{{"script":{},"args":[]}}"#, quote(script)))
    }

    /// A PNG screenshot of the viewport.
    #[track_caller]
    pub fn screenshot_png(&self) -> Vec<u8> {
        let v = self.must("GET", "/screenshot", "");
        let b64 = v.as_str().expect("a base64 screenshot");
        rill::rpc::base64::decode(b64.as_bytes()).expect("valid base64 from chromedriver")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Close the browser cleanly when we can; the Proc's drop then kills chromedriver's whole group anyway.
        if !self.session.is_empty() && self.driver.exited().is_none() {
            let _ = self.command("DELETE", &format!("/session/{}", self.session), "");
        }
    }
}

fn element_of(v: &Json) -> Option<Element> {
    v.get(ELEMENT_KEY).and_then(Json::as_str).map(|s| Element(s.to_string()))
}
