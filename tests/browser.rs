//! The web pages in a real browser: Debian's chromium, headless, driven through WebDriver
//! (chromium-driver, `fantoccini`), against a daemon fed with the corpus's real NetFlow v5
//! exports. Loads every page, filters the hosts table, opens a host, checks that a DNS name
//! carrying script payloads runs nothing, and keeps screenshots of each page in
//! `target/tmp/browser/` (the test artifacts).

mod common;

use common::serve::Serve;
use fantoccini::{ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Option<Driver> {
    if !common::have("chromedriver") || !common::have("chromium") {
        return None;
    }
    let port = common::serve::free_tcp_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_port(port, "chromedriver", Duration::from_secs(20));
    Some(Driver(child, port))
}

/// Waits (up to 60 s, for a loaded machine) until the browser shows a fully loaded page at
/// `path` whose query holds `query`.
async fn arrived(client: &fantoccini::Client, path: &str, query: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Either call may fail while a page unloads: that is "not yet".
        let url = client.current_url().await.ok();
        let ready = client
            .execute("return document.readyState;", vec![])
            .await
            .ok();
        if let (Some(url), Some(ready)) = (&url, &ready)
            && url.path() == path
            && url.query().unwrap_or("").contains(query)
            && *ready == serde_json::json!("complete")
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the browser is still at {url:?} ({ready:?}), not at {path}?…{query}…"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_pages_work_in_chromium_and_run_no_injected_script() {
    let Some(driver) = chromedriver() else {
        return;
    };
    let Some(exports) = common::corpus("exports") else {
        return;
    };
    let tmp = common::TempDir::new("browser");
    let log = common::dns_log(
        &tmp.0,
        "17.1.2.3",
        &[
            "<script>window.pwned=1</script>.evil.example",
            "<img src=x onerror=window.pwned=2>.example",
        ],
    );
    let serve = Serve::start(
        &tmp.0,
        &[
            "--no-db",
            "--workers",
            "1",
            "--dns-log",
            log.to_str().unwrap(),
        ],
    );
    // The corpus's real NetFlow v5 exports, replayed to the collector.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0;
    let mut captures: Vec<_> = std::fs::read_dir(&exports)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".nfv5-export.pcap"))
        .collect();
    captures.sort();
    assert!(
        !captures.is_empty(),
        "no NetFlow v5 export in {}",
        exports.display()
    );
    for c in &captures {
        flowprint::flow::capture::read_capture(std::fs::File::open(c).unwrap(), &mut |d| {
            sock.send_to(d.payload, serve.udp).unwrap();
            sent += 1;
        })
        .unwrap();
    }
    sock.send_to(
        &common::v5_now(0, &[([10, 7, 1, 1], [17, 1, 2, 3], 5223)]),
        serve.udp,
    )
    .unwrap();
    common::serve::wait_until("the flows are in", Duration::from_secs(10), || {
        common::serve::http(serve.api, "GET", "/hosts/10.7.1.1", None, b"").0 == 200
    });
    let base = format!("http://{}", serve.api);
    common::serve::wait_until("the pages show the hosts", Duration::from_secs(15), || {
        common::serve::http(serve.api, "GET", "/ui/hosts?q=10.7.1.1", None, b"")
            .1
            .contains("href=\"/ui/hosts/10.7.1.1\"")
    });

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a chromium session");
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = |name: &'static str| {
        let client = client.clone();
        let path = shots.join(format!("{name}.png"));
        async move {
            let png = client.screenshot().await.unwrap();
            assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
            std::fs::write(path, png).unwrap();
        }
    };

    // Overview.
    client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "Overview — flowprint");
    let charts = client.find_all(Locator::Css("svg.chart")).await.unwrap();
    assert!(charts.len() >= 2);
    shot("overview").await;

    // Hosts: the table, then filtered through its form.
    client.goto(&format!("{base}/ui/hosts")).await.unwrap();
    let rows = client.find_all(Locator::Css("tbody tr")).await.unwrap();
    assert!(rows.len() > 1, "{} rows", rows.len());
    shot("hosts").await;
    let q = client.find(Locator::Css("input[name=q]")).await.unwrap();
    q.send_keys("10.7.1.1").await.unwrap();
    client
        .find(Locator::Css("form.filters button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // A click that navigates does not wait for the new page: wait for it, or the old page's
    // rows are counted (seen under load).
    arrived(&client, "/ui/hosts", "q=10.7.1.1").await;
    let rows = client.find_all(Locator::Css("tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1);
    shot("hosts-filtered").await;

    // The host, by its link: the payloads are text, and nothing ran.
    client
        .find(Locator::Css("tbody a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrived(&client, "/ui/hosts/10.7.1.1", "").await;
    assert_eq!(client.title().await.unwrap(), "Host 10.7.1.1 — flowprint");
    let text = client
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("<script>window.pwned=1</script>.evil.example"),
        "{text}"
    );
    let pwned = client
        .execute("return typeof window.pwned;", vec![])
        .await
        .unwrap();
    assert_eq!(
        pwned,
        serde_json::json!("undefined"),
        "an injected script ran"
    );
    let imgs = client.find_all(Locator::Css("main img")).await.unwrap();
    assert!(imgs.is_empty(), "an injected element was created");
    shot("host").await;

    // Rules.
    client.goto(&format!("{base}/ui/rules")).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "Rules — flowprint");
    let text = client
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("os-core"), "{text}");
    shot("rules").await;

    client.close().await.unwrap();
    assert!(sent > 0);
    serve.stop();
}
