//! The web pages of `flowprint serve`, over HTTP against a running daemon: every page renders,
//! the hosts table filters, sorts and paginates, and strings that come from the network (here
//! DNS names with HTML and script payloads) appear as text, under a policy that runs no script.

mod common;

use common::serve::{Serve, http};
use std::time::Duration;

fn get(serve: &Serve, path: &str) -> (u16, String) {
    http(serve.api, "GET", path, None, b"")
}

#[test]
fn pages_render_filter_and_escape_what_the_network_says() {
    let tmp = common::TempDir::new("web");
    // Names an attacker controls: a DNS answer for Apple's push address carrying markup.
    let log = common::dns_log(
        &tmp.0,
        "17.1.2.3",
        &[
            "<script>alert(1)</script>.evil.example",
            "\"><img src=x onerror=alert(2)>.example",
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
    // 250 hosts of 10.7.0.0/24 talk to Apple's push service; one of them to the named address.
    let mut flows: Vec<([u8; 4], [u8; 4], u16)> = (0..250u32)
        .map(|i| ([10, 7, 0, i as u8], [17, 57, 144, (i % 200) as u8], 5223))
        .collect();
    flows.push(([10, 7, 1, 1], [17, 1, 2, 3], 5223));
    let datagrams: Vec<Vec<u8>> = flows
        .chunks(25)
        .enumerate()
        .map(|(i, c)| common::v5_now(i as u32 * 25, c))
        .collect();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &datagrams {
        sock.send_to(d, serve.udp).unwrap();
    }
    common::serve::wait_until(
        "the host is in the inventory",
        Duration::from_secs(10),
        || get(&serve, "/hosts/10.7.1.1").0 == 200,
    );
    // The pages read summaries up to 2 s old, refreshed behind the request that finds them old.
    common::serve::wait_until(
        "the hosts page shows every host",
        Duration::from_secs(15),
        || get(&serve, "/ui/hosts").1.contains("251 of 251 hosts"),
    );

    // The host page: the payloads are text, escaped; the policy forbids scripts.
    let (status, page) = get(&serve, "/ui/hosts/10.7.1.1");
    assert_eq!(status, 200, "{page}");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.evil.example"),
        "{page}"
    );
    assert!(
        !page.contains("<script"),
        "a script tag got through: {page}"
    );
    assert!(!page.contains("<img"), "an img tag got through: {page}");
    assert!(page.contains("apple-push-port"), "{page}");
    assert!(page.contains("<svg"), "the timeline: {page}");
    let headers = raw_headers(&serve, "/ui/hosts/10.7.1.1");
    let csp = headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-security-policy:")
        })
        .unwrap_or_else(|| panic!("no CSP: {headers}"));
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );

    // Overview: counts and charts.
    let (status, page) = get(&serve, "/");
    assert_eq!(status, 200);
    assert!(
        page.contains("hosts seen") && page.contains("Hosts by OS family"),
        "{page}"
    );
    assert!(page.matches("<svg").count() >= 2, "{page}");
    assert!(
        page.contains("<meta http-equiv=\"refresh\" content=\"10\">"),
        "{page}"
    );

    // Hosts: 251 hosts, 100 a page; filter by subnet and text; a bad subnet is a 400.
    let (_, page) = get(&serve, "/ui/hosts");
    assert!(page.contains("251 of 251 hosts; page 1 of 3"), "{page}");
    assert_eq!(page.matches("href=\"/ui/hosts/10.7.").count(), 100);
    let (_, page) = get(&serve, "/ui/hosts?subnet=10.7.1.0%2F24");
    assert!(page.contains("1 of 251 hosts"), "{page}");
    let (_, page) = get(&serve, "/ui/hosts?q=10.7.0.24&page=1");
    assert!(page.contains("href=\"/ui/hosts/10.7.0.24\""), "{page}");
    let (_, page) = get(&serve, "/ui/hosts?page=3");
    assert_eq!(page.matches("href=\"/ui/hosts/10.7.").count(), 51);
    let (status, _) = get(&serve, "/ui/hosts?subnet=not-a-subnet");
    assert_eq!(status, 400);
    let (status, _) = get(&serve, "/ui/hosts?page=x");
    assert_eq!(status, 400);
    // What the form sends: every field, the empty ones empty.
    let (status, page) = get(&serve, "/ui/hosts?q=10.7.1.1&os=&software=&subnet=&min=");
    assert_eq!(status, 200);
    assert!(page.contains("1 of 251 hosts"), "{page}");
    let (status, _) = get(&serve, "/ui/hosts?min=high");
    assert_eq!(status, 400);
    let (status, _) = get(&serve, "/ui/hosts/not-an-address");
    assert_eq!(status, 400);
    let (status, _) = get(&serve, "/ui/hosts/192.0.2.99");
    assert_eq!(status, 404);

    // Rules: packs and hits.
    let (status, page) = get(&serve, "/ui/rules");
    assert_eq!(status, 200);
    assert!(
        page.contains("os-core") && page.contains("apple-push-port"),
        "{page}"
    );
    let (status, css) = get(&serve, "/ui/style.css");
    assert_eq!(status, 200);
    assert!(css.contains("svg.chart"));
    serve.stop();
}

/// The response head of a GET, as text.
fn raw_headers(serve: &Serve, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(serve.api).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").next().unwrap().to_string()
}

/// One request with `Host: host` (none when `None`): (status, body).
fn get_as(serve: &Serve, path: &str, host: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(serve.api).unwrap();
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// Issue 15, defect 12 (DNS rebinding): a page of another site whose name resolves to
/// 127.0.0.1 sends its own name in `Host`: refused (421) on the pages and the API alike, and
/// counted; loopback names and addresses, the listen address and `--api-host` names pass.
#[test]
fn requests_naming_another_host_are_refused() {
    let tmp = common::TempDir::new("web-hosts");
    let serve = Serve::start(
        &tmp.0,
        &["--no-db", "--workers", "1", "--api-host", "flowprint.lan"],
    );
    let port = serve.api.port();
    for path in ["/", "/ui/hosts", "/hosts", "/rules", "/metrics", "/health"] {
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("localhost.evil.example:{port}"),
            "127.0.0.1.nip.io".to_string(),
        ] {
            let (status, out) = get_as(&serve, path, Some(&host));
            assert_eq!(status, 421, "{path} as {host}: {out}");
            assert!(out.contains("api.hosts"), "{out}");
        }
    }
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("127.1.2.3:{port}"),
        format!("[::1]:{port}"),
        format!("flowprint.lan:{port}"),
        "FLOWPRINT.LAN.".to_string(),
    ] {
        let (status, out) = get_as(&serve, "/ui/hosts", Some(&host));
        assert_eq!(status, 200, "{host}: {out}");
    }
    // No Host at all (an HTTP/1.0 client; browsers always send one).
    assert_eq!(get_as(&serve, "/health", None).0, 200);
    let (_, m) = http(serve.api, "GET", "/metrics", None, b"");
    let refused = m
        .lines()
        .find(|l| l.starts_with("flowprint_api_requests_rejected_total{reason=\"host\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert_eq!(refused, Some(24), "{m}");
    serve.stop();
}

/// The hosts a page lists (its rows' links).
fn hosts_on_page(page: &str) -> Vec<String> {
    page.split("<td><a href=\"/ui/hosts/")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_string))
        .collect()
}

#[test]
fn the_api_and_the_pages_filter_hosts_alike() {
    let tmp = common::TempDir::new("web-filter");
    let rules = tmp.0.join("mine");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("filter.rules"),
        r#"
rule linux {
    when peer.port == 4441 and proto == tcp
    then os.family = "Linux" confidence 0.6
}
rule ubuntu {
    when peer.port == 4442 and proto == tcp
    then os.family = "Linux" confidence 0.9, os.name = "Ubuntu" confidence 0.9
}
rule firefox {
    when peer.port == 4443 and proto == tcp
    then software = "Firefox" confidence 0.9
}
"#,
    )
    .unwrap();
    let db = tmp.0.join("inv.db");
    let serve = Serve::start(
        &tmp.0,
        &[
            "--db",
            db.to_str().unwrap(),
            "--workers",
            "2",
            "--no-default-rules",
            "--rules",
            rules.to_str().unwrap(),
        ],
    );
    // 10.8.0.0/24: Linux (0.6); 10.8.1.0/24: Linux, Ubuntu (0.9); 10.8.2.0/24: Firefox only;
    // 10.8.3.0/24: nothing.
    let mut flows: Vec<([u8; 4], [u8; 4], u16)> = Vec::new();
    for (net, port, n) in [
        (0u8, 4441u16, 10u8),
        (1, 4442, 10),
        (2, 4443, 10),
        (3, 9, 5),
    ] {
        for i in 1..=n {
            flows.push(([10, 8, net, i], [198, 51, 100, net], port));
        }
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, c) in flows.chunks(10).enumerate() {
        sock.send_to(&common::v5_now(i as u32 * 10, c), serve.udp)
            .unwrap();
    }
    common::serve::wait_until(
        "the hosts page shows every host",
        Duration::from_secs(15),
        || get(&serve, "/ui/hosts").1.contains("35 of 35 hosts"),
    );
    let filters = [
        ("", 35),
        ("os=linux", 20),
        // `os` is the family or the name, in the API and on the pages alike.
        ("os=UBUNTU", 10),
        ("os=linux&min_confidence=0.8", 10),
        ("software=firefox", 10),
        ("label=Ubuntu", 10),
        ("label=firefox&min=0.95", 0),
        ("min_confidence=0.8", 20),
        ("q=fire", 10),
        ("q=10.8.3.", 5),
        ("subnet=10.8.1.0%2F24", 10),
        ("subnet=10.8.0.0%2F23&os=ubuntu", 10),
        ("os=&software=&q=&subnet=&min=", 35),
    ];
    let mut answers = Vec::new();
    for (filter, want) in filters {
        let api = common::serve::get_json(serve.api, &format!("/hosts?{filter}&limit=1000"));
        let from_api: Vec<String> = api["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["host"].as_str().unwrap().to_string())
            .collect();
        let (status, page) = get(&serve, &format!("/ui/hosts?{filter}"));
        assert_eq!(status, 200, "{filter}: {page}");
        assert_eq!(from_api, hosts_on_page(&page), "{filter}");
        assert_eq!(api["total"], want, "{filter}: {api}");
        assert!(
            page.contains(&format!("{want} of 35 hosts")),
            "{filter}: {page}"
        );
        answers.push((filter, from_api));
    }
    // A bad filter is refused by both.
    assert_eq!(get(&serve, "/hosts?subnet=nope").0, 400);
    assert_eq!(get(&serve, "/ui/hosts?subnet=nope").0, 400);
    assert_eq!(get(&serve, "/hosts?min_confidence=high").0, 400);

    // `flowprint hosts` on the inventory the daemon wrote when it stopped: the same hosts.
    serve.stop();
    for (filter, from_api) in answers {
        let mut args = vec!["hosts", "--db", db.to_str().unwrap(), "--format", "json"];
        let pairs: Vec<(String, String)> = filter
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| {
                let flag = match k {
                    "q" => "--text",
                    "min" | "min_confidence" => "--min-confidence",
                    other => return (format!("--{other}"), v.replace("%2F", "/")),
                };
                (flag.to_string(), v.replace("%2F", "/"))
            })
            .collect();
        for (k, v) in &pairs {
            args.push(k);
            args.push(v);
        }
        let out = common::cli::run(&tmp.0, &args);
        let stdout = common::cli::text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            common::cli::text(&out.stderr)
        );
        let from_cli: Vec<String> = stdout
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["host"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(from_cli, from_api, "{args:?}");
    }
}

#[test]
fn only_readers_of_the_host_list_have_it_computed() {
    let tmp = common::TempDir::new("web-history");
    let serve = Serve::start(&tmp.0, &["--no-db", "--workers", "1"]);
    let flows: Vec<([u8; 4], [u8; 4], u16)> = (1..=20u8)
        .map(|i| ([10, 9, 0, i], [17, 57, 144, i], 5223))
        .collect();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&common::v5_now(0, &flows), serve.udp).unwrap();
    let computed = || {
        common::serve::metric(
            &get(&serve, "/metrics").1,
            "flowprint_host_summaries_computed_total",
        )
    };
    common::serve::wait_until("flows evaluated", Duration::from_secs(10), || {
        common::serve::metric(
            &get(&serve, "/metrics").1,
            "flowprint_flows_evaluated_total",
        ) >= 20
    });
    // The history is sampled every 10 s; a sample counts the labelled hosts of the list last
    // computed and never scores the hosts itself.
    std::thread::sleep(Duration::from_millis(10_500));
    assert_eq!(computed(), 0, "nobody read the host list");
    // A reader has it computed; the overview's counts come from that same list.
    let (status, page) = get(&serve, "/");
    assert_eq!(status, 200);
    assert!(page.contains("20</span> hosts seen"), "{page}");
    assert_eq!(computed(), 1);
    let (_, hosts) = get(&serve, "/ui/hosts");
    assert!(hosts.contains("20 of 20 hosts"), "{hosts}");
    assert_eq!(computed(), 1, "the pages share one list");
}
