//! Rule files and rule directories made to hurt: nesting deep enough to overflow a stack, link
//! loops, editors' lock files, files without end, broken items among good ones, odd bytes. Each
//! through the real binary, as a user or an attacker meets it (issue 15).

mod common;

use common::cli::{run, text};
use common::serve::{Serve, get_json, wait_until};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

fn deep_rule(levels: usize) -> String {
    format!(
        "rule deep {{\n when {}peer.port == 80{}\n then os.family = \"Linux\" confidence 0.5\n}}\n",
        "(".repeat(levels),
        ")".repeat(levels)
    )
}

const GOOD: &str = "rule good { when peer.port == 81 then software = \"Good\" confidence 0.5 }\n";

/// 1,000 and 100,000 nested parentheses (and `not`s) are an error with a location in every
/// command that compiles rules; none of them aborts, and the other rules still compile.
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let tmp = common::TempDir::new("hostile-deep");
    for levels in [1_000usize, 100_000] {
        let f = tmp.0.join(format!("deep{levels}.rules"));
        std::fs::write(&f, format!("{}{GOOD}", deep_rule(levels))).unwrap();
        let path = f.to_str().unwrap();
        let out = run(&tmp.0, &["check", path]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("error[FP0001]: nested more than 64 levels deep"),
            "{err}"
        );
        assert!(err.contains(&format!("deep{levels}.rules:2:70")), "{err}");
        assert!(err.contains("1 rule(s) compiled, 1 error(s)"), "{err}");
        // The quoted line is cut, not echoed whole.
        assert!(err.len() < 4_000, "{} bytes of diagnostics", err.len());
        let out = run(
            &tmp.0,
            &["analyze", "--no-default-rules", "--rules", path, "-"],
        );
        assert_ne!(out.status.code(), Some(134), "{}", text(&out.stderr));
        assert!(out.status.code().is_some(), "killed by a signal");
    }
    let nots = format!(
        "rule n {{ when {}peer.port == 80 then software = \"N\" confidence 0.5 }}\n{GOOD}",
        "not ".repeat(50_000)
    );
    std::fs::write(tmp.0.join("nots.rules"), nots).unwrap();
    let out = run(&tmp.0, &["check", "nots.rules"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nested more than 64 levels deep"), "{err}");
    // Exactly at the limit still compiles (the rule's own `{` is one level).
    std::fs::write(tmp.0.join("edge.rules"), deep_rule(63)).unwrap();
    let out = run(&tmp.0, &["check", "edge.rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// The daemon watching a directory survives a deep rule written into it, keeps its rules,
/// reports the failed reload, and still reloads the next good edit.
#[test]
fn a_deep_rule_in_a_watched_directory_does_not_kill_the_daemon() {
    let tmp = common::TempDir::new("hostile-serve-deep");
    let pack = tmp.0.join("mine");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("good.rules"), GOOD).unwrap();
    let args = [
        "--no-default-rules",
        "--rules",
        pack.to_str().unwrap(),
        "--no-db",
    ];
    let serve = Serve::start(&tmp.0, &args);
    let failed = || {
        get_json(serve.api, "/rules")["failed_reloads"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(get_json(serve.api, "/rules")["rules"], 1);
    std::fs::write(pack.join("deep.rules"), deep_rule(1_000)).unwrap();
    wait_until("the deep rule refused", Duration::from_secs(20), || {
        failed() >= 1
    });
    // An unrelated edit: still alive, still refusing the broken set, old rules running.
    std::fs::write(pack.join("good.rules"), format!("{GOOD}# edited\n")).unwrap();
    wait_until("the second refusal", Duration::from_secs(20), || {
        failed() >= 2
    });
    assert_eq!(get_json(serve.api, "/rules")["rules"], 1);
    std::fs::remove_file(pack.join("deep.rules")).unwrap();
    std::fs::write(
        pack.join("more.rules"),
        "rule more { when peer.port == 82 then software = \"More\" confidence 0.5 }\n",
    )
    .unwrap();
    wait_until("the good set loaded", Duration::from_secs(20), || {
        get_json(serve.api, "/rules")["rules"] == 2
    });
    let log = serve.stop();
    assert!(log.contains("nested more than 64 levels deep"), "{log}");
    // And a daemon booted on the deep file refuses it at boot without a stack overflow.
    std::fs::write(pack.join("deep.rules"), deep_rule(100_000)).unwrap();
    let fresh = common::TempDir::new("hostile-serve-deep-boot");
    let out = run(
        &fresh.0,
        &[
            "serve",
            "--check",
            "--state-dir",
            fresh.0.to_str().unwrap(),
            "--no-default-rules",
            "--rules",
            pack.to_str().unwrap(),
            "--no-db",
        ],
    );
    assert!(
        out.status.code().is_some_and(|c| c != 0 && c != 134),
        "{out:?}"
    );
}

/// `ln -s . dir/loop; ln -s .. dir/sub/up`: `check`, `analyze` and `flows` end, read each file
/// once, and say what they skipped.
#[test]
fn symlink_loops_neither_hang_nor_count_twice() {
    let tmp = common::TempDir::new("hostile-loops");
    let rules = tmp.0.join("rules");
    std::fs::create_dir_all(rules.join("sub")).unwrap();
    std::fs::write(rules.join("a.rules"), GOOD).unwrap();
    std::fs::write(
        rules.join("sub/b.rules"),
        "rule b { when peer.port == 82 then software = \"B\" confidence 0.5 }\n",
    )
    .unwrap();
    symlink(".", rules.join("loop")).unwrap();
    symlink("..", rules.join("sub/up")).unwrap();
    // An Emacs lock file: a dangling link named `.#a.rules`.
    symlink("user@host.1234:1700000000", rules.join(".#a.rules")).unwrap();
    let out = run(&tmp.0, &["check", rules.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("2 rule(s) compiled, 0 error(s), 2 warning(s)"),
        "{err}"
    );
    assert!(err.contains("warning[FP0025]"), "{err}");
    assert!(err.contains("symbolic link loop"), "{err}");

    let flows = tmp.0.join("flows");
    std::fs::create_dir_all(flows.join("day")).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flows/home-network.jsonl");
    std::fs::copy(&example, flows.join("day/a.jsonl")).unwrap();
    symlink(".", flows.join("loop")).unwrap();
    symlink("..", flows.join("day/up")).unwrap();
    let once = run(&tmp.0, &["flows", example.to_str().unwrap()]);
    let looped = run(&tmp.0, &["flows", flows.to_str().unwrap()]);
    assert_eq!(looped.status.code(), Some(0), "{}", text(&looped.stderr));
    assert_eq!(
        text(&looped.stdout).lines().count(),
        text(&once.stdout).lines().count(),
        "each flow once"
    );
    assert!(
        text(&looped.stderr).contains("not read"),
        "{}",
        text(&looped.stderr)
    );
}

/// A daemon watching a directory with a link loop and an editor's lock file reloads normally.
#[test]
fn editor_lock_files_and_loops_do_not_break_reloads() {
    let tmp = common::TempDir::new("hostile-serve-lock");
    let pack = tmp.0.join("mine");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("good.rules"), GOOD).unwrap();
    let serve = Serve::start(
        &tmp.0,
        &[
            "--no-default-rules",
            "--rules",
            pack.to_str().unwrap(),
            "--no-db",
        ],
    );
    let generation = || {
        get_json(serve.api, "/rules")["generation"]
            .as_u64()
            .unwrap()
    };
    let g = generation();
    symlink("user@host.1234:1700000000", pack.join(".#good.rules")).unwrap();
    symlink(".", pack.join("loop")).unwrap();
    std::fs::write(
        pack.join("more.rules"),
        "rule more { when peer.port == 82 then software = \"More\" confidence 0.5 }\n",
    )
    .unwrap();
    wait_until("the edit reloaded", Duration::from_secs(20), || {
        generation() > g && get_json(serve.api, "/rules")["rules"] == 2
    });
    assert_eq!(get_json(serve.api, "/rules")["failed_reloads"], 0);
    serve.stop();
}

/// One broken item never hides the others: every error of a file is shown, the good rules of
/// the same file compile, and an unreadable path is reported beside the others' diagnostics.
#[test]
fn every_error_of_a_file_is_shown_and_its_good_rules_compile() {
    let tmp = common::TempDir::new("hostile-recover");
    std::fs::write(
        tmp.0.join("mixed.rules"),
        "rule a { when peer.port = 80 then software = \"A\" confidence 0.5 }\n\
         rule b { when peer.port == 81 then software = \"B\" confidence 0.5 }\n\
         rule c {\n when peer.port == 82\n then software = \"C\" confidence 0.5\n title \"late\"\n}\n\
         rule d { when peer.port == 83 then software = \"D\" confidence 0.5 }\n",
    )
    .unwrap();
    let out = run(&tmp.0, &["check", "mixed.rules", "missing.rules"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("mixed.rules:1:25"), "`=` of rule a: {err}");
    assert!(
        err.contains("mixed.rules:6:2"),
        "`title` after `then` in rule c: {err}"
    );
    assert!(
        err.contains("metadata (`title`, `status`, ...) goes first"),
        "{err}"
    );
    assert!(err.contains("missing.rules"), "{err}");
    assert!(err.contains("2 rule(s) compiled, 3 error(s)"), "{err}");
}

/// Positions stay right with a byte-order mark, NUL bytes and non-ASCII names; control
/// characters are never echoed raw to the terminal.
#[test]
fn odd_bytes_get_exact_positions_and_are_not_echoed_raw() {
    let tmp = common::TempDir::new("hostile-bytes");
    std::fs::write(
        tmp.0.join("bom.rules"),
        "\u{feff}rule a {\n when peer.port = 80\n then software = \"A\" confidence 0.5\n}\n",
    )
    .unwrap();
    let out = run(&tmp.0, &["check", "bom.rules"]);
    assert!(
        text(&out.stderr).contains("bom.rules:2:17"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        tmp.0.join("odd.rules"),
        "rule a { when peer.port == 80 and \u{0}\u{1b}[31m x then software = \"A\" confidence 0.5 }\n\
         rule héllo { when peer.port == 1 then software = \"H\" confidence 0.5 }\n",
    )
    .unwrap();
    let out = run(&tmp.0, &["check", "odd.rules"]);
    let err = text(&out.stderr);
    assert!(err.contains("odd.rules:1:35"), "{err}");
    assert!(err.contains("control character U+0000"), "{err}");
    assert!(err.contains("odd.rules:2:7"), "{err}");
    assert!(err.contains("`é` cannot appear outside a string"), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{0}'), "{err:?}");
}

/// Files without end (`/dev/zero`) and huge files are refused at the limit, not read whole.
#[test]
fn endless_and_huge_side_inputs_are_refused_at_their_limit() {
    let tmp = common::TempDir::new("hostile-huge");
    let out = run(&tmp.0, &["check", "/dev/zero"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("larger than the limit"), "{err}");
    let out = run(
        &tmp.0,
        &["analyze", "--overrides", "/dev/zero", "examples-none.jsonl"],
    );
    let err = text(&out.stderr);
    assert!(err.contains("larger than the limit"), "{err}");
}
