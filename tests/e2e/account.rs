//! Accounts and devices: one real `mesh-service` on loopback, each device
//! a home of its own with its own `meshd`.

use mesh_e2e::{
    MeshService, TestEnv, connect_device, require_tool, run_err, stderr, stdout, wait_until,
    with_input,
};
use serde_json::Value;

/// A service and a first device that created `alice@example.com`.
fn account() -> (TestEnv, MeshService, TestEnv) {
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let mut first = TestEnv::device(&service);
    // Exports need the user's yes: this script says no until told.
    first.askpass_from_file();
    let created = first.mesh_json(&["account", "create", "alice@example.com", "--name", "tablet"]);
    assert!(
        created["profile"]
            .as_str()
            .expect("a profile")
            .starts_with('M')
    );
    (host, service, first)
}

fn catalog(env: &TestEnv) -> Value {
    env.mesh_json(&["catalog", "list", "application"])
}

#[test]
fn two_devices_by_witness_and_by_pin_share_their_catalogs() {
    let (_host, service, tablet) = account();
    tablet.catalog_put("application", "ssh-work", "ssh-ed25519 AAAA work");

    let laptop = TestEnv::device(&service);
    connect_device(&tablet, &laptop, "laptop", "device");
    wait_until("the laptop has the tablet's catalog", || {
        catalog(&laptop) == catalog(&tablet)
    });
    assert_eq!(catalog(&laptop)["ssh-work"], "ssh-ed25519 AAAA work");

    // The PIN route needs no approval: the tablet's meshd answers it.
    let uri = tablet.mesh_json(&["account", "pin"])["uri"]
        .as_str()
        .expect("a URI")
        .to_owned();
    assert!(uri.starts_with("mcu://alice@example.com/"), "{uri}");
    let phone = TestEnv::device(&service);
    // The URI holds the PIN: refused on the command line, read from
    // standard input.
    let err = stderr(&run_err(
        phone
            .ours("mesh")
            .args(["device", "connect", &uri, "--name", "phone"]),
    ));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not taken on the command line") && !err.contains(&uri),
        "{err}"
    );
    let out = with_input(
        phone
            .ours("mesh")
            .args(["device", "connect", "--name", "phone"]),
        &format!("{uri}\n"),
    );
    assert!(stdout(&out).contains("accepted"), "{}", stderr(&out));
    wait_until("the phone has the catalog", || {
        catalog(&phone) == catalog(&tablet)
    });

    // A change on either side reaches the others.
    laptop.catalog_put("application", "from-laptop", "1");
    wait_until("the tablet sees the laptop's entry", || {
        catalog(&tablet)["from-laptop"] == "1"
    });
    tablet.catalog_put("application", "from-laptop", "2");
    tablet.mesh(&["catalog", "delete", "application", "ssh-work"]);
    wait_until("the laptop and phone see the update and the delete", || {
        let (l, p) = (catalog(&laptop), catalog(&phone));
        l["from-laptop"] == "2" && l.get("ssh-work").is_none() && p == l
    });
    let devices = tablet.mesh_json(&["device", "list"]);
    let names: Vec<&str> = devices
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["laptop", "phone", "tablet"]);
    // A plain device is no administrator.
    let err = stderr(&run_err(
        laptop
            .ours("mesh")
            .args(["account", "escrow", "--shares", "3", "--quorum", "2"]),
    ));
    assert!(err.contains("not an administrator"), "{err}");
    // A wrong code approves nothing.
    let err = stderr(&run_err(tablet.ours("mesh").args([
        "device",
        "accept",
        "AAAA-BBBB-CCCC-DDDD-EEEE",
    ])));
    assert!(err.contains("no pending request"), "{err}");
}

#[test]
fn a_revoked_device_is_refused_and_knows_it() {
    let (_host, service, tablet) = account();
    let laptop = TestEnv::device(&service);
    connect_device(&tablet, &laptop, "laptop", "device");
    tablet.mesh(&["device", "revoke", "laptop"]);
    let out = with_input(
        laptop
            .ours("mesh")
            .args(["catalog", "put", "application", "x"]),
        "y",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("revoked"), "{err}");
    let status = laptop
        .ours("mesh")
        .args(["account", "status", "--json"])
        .output()
        .expect("runs");
    let status: Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["status"], "revoked");
    let names = tablet.mesh_json(&["device", "list"]);
    assert_eq!(names.as_array().expect("rows").len(), 1, "{names}");
}

#[test]
fn escrow_then_recover_on_a_third_home() {
    let (_host, service, tablet) = account();
    tablet.catalog_put("application", "kept", "safe");
    tablet.mesh(&["ssh", "create", "escrowed"]);
    let ssh_key = stdout(&tablet.mesh(&["ssh", "get", "escrowed"]));
    let profile = tablet.mesh_json(&["account", "status"])["profile"]
        .as_str()
        .expect("profile")
        .to_owned();
    tablet.confirm(true);
    let escrow = tablet.mesh_json(&["account", "escrow", "--shares", "5", "--quorum", "3"]);
    assert!(
        tablet.askpass_log().contains("recovery shares"),
        "meshd asked first: {}",
        tablet.askpass_log()
    );
    let shares: Vec<&str> = escrow["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(shares.len(), 5);
    // Shares come on standard input, one a line, never on the command line.
    let fresh = TestEnv::new();
    let recover = |env: &TestEnv, shares: &[&str], more: &[&str]| {
        with_input(
            env.ours("mesh")
                .args(["account", "recover", "--json"])
                .args(more),
            &(shares.join("\n") + "\n"),
        )
    };
    let out = recover(&fresh, &[shares[4], shares[1], shares[2]], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recovered: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(recovered["profile"], profile.as_str());
    let out = recover(&fresh, &[shares[4], shares[1]], &[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("3 shares are needed, 2 given"), "{err}");

    // The lost-everything case: a new machine rebuilds the account from
    // three shares and rejoins its service as an administrator.
    let rebuilt = TestEnv::device(&service);
    let out = recover(
        &rebuilt,
        &[shares[0], shares[2], shares[3]],
        &["--address", "alice@example.com", "--name", "new-laptop"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let joined: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(joined["profile"], profile.as_str());
    let status = rebuilt.mesh_json(&["account", "status"]);
    assert_eq!(
        (status["status"].as_str(), status["admin"].as_bool()),
        (Some("connected"), Some(true))
    );
    assert_eq!(catalog(&rebuilt)["kept"], "safe");
    // The SSH key came back with the account: the new machine's agent
    // serves it.
    wait_until(
        "the rebuilt device's agent serves the escrowed SSH key",
        || {
            let listed = rebuilt
                .command("ssh-add")
                .env("SSH_AUTH_SOCK", rebuilt.ssh_auth_sock())
                .arg("-L")
                .output()
                .expect("ssh-add runs");
            stdout(&listed).contains(ssh_key.trim())
        },
    );
    wait_until("the tablet sees the new administrator", || {
        tablet
            .mesh_json(&["device", "list"])
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["name"] == "new-laptop"))
    });
    rebuilt.catalog_put("application", "after", "recovery");
    wait_until("the tablet sees its write", || {
        catalog(&tablet)["after"] == "recovery"
    });
}

/// Start the service lying in `mode` to a device-role laptop that has
/// frames yet to download (or, for a rollback, has seen them all), and
/// check that the laptop believes nothing of it: the sync fails, `mesh
/// account status` names the problem (`expected`), the replica and the
/// catalog are as they were, and once the service is honest again the
/// laptop catches up.
fn caught(mode: &str, expected: &str) {
    let (_host, mut service, tablet) = account();
    tablet.catalog_put("application", "one", "1");
    let laptop = TestEnv::device(&service);
    connect_device(&tablet, &laptop, "laptop", "device");
    wait_until("the laptop synced", || catalog(&laptop)["one"] == "1");
    if mode == "rollback" {
        // A rollback shows less than the laptop has already seen.
        tablet.catalog_put("application", "two", "2");
        tablet.catalog_put("application", "git:https://github.com", "token");
        wait_until("the laptop has all", || {
            catalog(&laptop)["git:https://github.com"] == "token"
        });
    }
    // What the laptop believes, read while its daemon runs: nothing may
    // start it again (and sync with the honest service) until the lie.
    let believed = catalog(&laptop);
    laptop.mesh(&["daemon", "stop"]);
    if mode != "rollback" {
        // The others lie about what the laptop has yet to download.
        tablet.catalog_put("application", "two", "2");
        tablet.catalog_put("application", "git:https://github.com", "token");
    }
    let stores = laptop.home().join(".local/share/mesh/stores");
    let replica = || std::fs::read(stores.join("MMM_Application.dare")).expect("the replica");
    let before = (replica(), believed);

    service.restart(Some(mode));
    let out = run_err(laptop.ours("mesh").args(["account", "sync"]));
    let said = stdout(&out);
    assert!(said.contains("FAILED"), "{mode}: {said}");
    let status = run_err(laptop.ours("mesh").args(["account", "status"]));
    let report = stdout(&status);
    assert!(report.contains("SYNC PROBLEMS"), "{mode}: {report}");
    assert!(report.contains(expected), "{mode}: {report}");
    assert_eq!(
        (replica(), catalog(&laptop)),
        before,
        "{mode}: nothing the hostile service sent was kept"
    );
    assert!(
        !catalog(&laptop)
            .as_object()
            .expect("a catalog")
            .contains_key("git:https://evil.example"),
        "{mode}"
    );
    // No store name became a path.
    assert!(
        !laptop.home().join(".local/share/.bashrc.d").exists(),
        "{mode}: a file was written outside the stores"
    );

    // Once the service is honest again, the laptop catches up.
    service.restart(None);
    laptop.mesh(&["account", "sync"]);
    let caught_up = catalog(&laptop);
    assert_eq!(caught_up["git:https://github.com"], "token", "{mode}");
    assert_eq!(caught_up.as_object().map(|o| o.len()), Some(3), "{mode}");
    let status = laptop.mesh_json(&["account", "status"]);
    assert_eq!(status["sync_errors"], serde_json::json!({}), "{mode}");
}

#[test]
fn a_hostile_service_cannot_rewrite_the_log() {
    caught("rollback", "rolled");
    caught("fork", "fork");
    caught("reorder", "do not extend ours");
    caught("alter", "do not extend ours");
}

#[test]
fn a_hostile_service_cannot_relabel_or_replay_an_entry() {
    // The GitHub token's frame, renamed for evil.example: same ciphertext,
    // same signatures.
    caught("relabel", "relabelled");
    // The first version of an entry appended again.
    caught("replay", "old version appended again");
}

#[test]
fn a_hostile_service_cannot_delete_or_add_an_entry() {
    caught("unsigned-delete", "not signed by any device");
    caught("forged-delete", "not signed by any device");
    caught("inject", "not signed by any device");
}

#[test]
fn a_hostile_service_cannot_withhold_exhaust_or_write_files() {
    caught("withhold", "withheld");
    caught("path-store", "not a Mesh answer");
    caught("oversized", "refusing it");
    caught("endless", "more than one sync takes");
}

#[test]
fn a_killed_service_loses_no_acknowledged_entry() {
    let (_host, mut service, tablet) = account();
    let laptop = TestEnv::device(&service);
    connect_device(&tablet, &laptop, "laptop", "device");
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        for i in 0..5 {
            let name = format!("entry-{round}-{i}");
            tablet.catalog_put("application", &name, "v");
            acknowledged.push(name);
        }
        // SIGKILL right after the last acknowledged write, mid-sync for
        // the laptop, then start again on the same store.
        service.restart(None);
    }
    wait_until("the laptop has every acknowledged entry", || {
        let list = catalog(&laptop);
        acknowledged.iter().all(|name| list.get(name).is_some())
    });
    assert_eq!(catalog(&tablet), catalog(&laptop));
}

#[test]
fn the_service_speaks_tls_and_an_untrusted_certificate_is_refused() {
    let host = TestEnv::new();
    let service = MeshService::start_tls(&host);
    assert!(service.url().starts_with("https://"));
    let tablet = TestEnv::device(&service);
    tablet.mesh_json(&["account", "create", "alice@example.com", "--name", "tablet"]);
    tablet.catalog_put("application", "over-tls", "yes");
    let laptop = TestEnv::device(&service);
    connect_device(&tablet, &laptop, "laptop", "device");
    wait_until("the laptop syncs over TLS", || {
        catalog(&laptop)["over-tls"] == "yes"
    });

    // A device that does not trust the certificate refuses to talk.
    let stranger = TestEnv::with(&[("MESH_SERVICE", &service.url())]);
    let err = stderr(&run_err(stranger.ours("mesh").args([
        "account",
        "create",
        "eve@example.com",
    ])));
    assert!(err.contains("cannot reach the service"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn an_account_full_to_its_limit_is_refused_with_a_reason() {
    let host = TestEnv::new();
    // Bind writes two frames (Device and Access); allow three more.
    let service = MeshService::start_with(&host, &["--max-entries", "5"]);
    let tablet = TestEnv::device(&service);
    tablet.mesh(&["account", "create", "alice@example.com"]);
    for i in 0..3 {
        tablet.catalog_put("application", &format!("e{i}"), "v");
    }
    let out = with_input(
        tablet
            .ours("mesh")
            .args(["catalog", "put", "application", "e3"]),
        "v",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("413") && err.contains("too many entries"),
        "{err}"
    );
    // Nothing half-written: the three entries are all there is.
    assert_eq!(catalog(&tablet).as_object().map(|m| m.len()), Some(3));
    let other = TestEnv::device(&service);
    let err = stderr(&run_err(other.ours("mesh").args([
        "device",
        "connect",
        "alice@example.com",
        "--no-wait",
    ])));
    assert!(
        err.contains("too many entries"),
        "connection requests are bounded too: {err}"
    );
}

/// `mesh device connect` with the URI pasted on standard input.
fn connect_by_uri(env: &TestEnv, uri: &str, name: &str, wait: bool) -> std::process::Output {
    let mut cmd = env.ours("mesh");
    cmd.args(["device", "connect", "--name", name]);
    if !wait {
        cmd.arg("--no-wait");
    }
    with_input(&mut cmd, &format!("{uri}\n"))
}

#[test]
fn a_pin_joins_one_device_once_before_it_expires_and_only_the_account_it_names() {
    let (_host, mut service, tablet) = account();
    let pin = |args: &[&str]| {
        let mut all = vec!["account", "pin"];
        all.extend_from_slice(args);
        tablet.mesh_json(&all)["uri"]
            .as_str()
            .expect("a URI")
            .to_owned()
    };
    let pending = || {
        tablet.mesh(&["account", "sync"]);
        tablet
            .mesh_json(&["device", "pending"])
            .as_array()
            .map_or(0, Vec::len)
    };
    // A PIN never makes an administrator.
    let err = stderr(&run_err(
        tablet
            .ours("mesh")
            .args(["account", "pin", "--rights", "admin"]),
    ));
    assert!(err.contains("never makes an administrator"), "{err}");

    // The URI names the account's profile and service: it alone joins.
    let uri = pin(&[]);
    let profile = tablet.mesh_json(&["account", "status"])["profile"]
        .as_str()
        .expect("a profile")
        .to_owned();
    assert!(uri.contains(&format!("profile={profile}")), "{uri}");
    assert!(uri.contains(&format!("service={}", service.url())), "{uri}");

    // First use: accepted without approval.
    let phone = TestEnv::device(&service);
    let out = connect_by_uri(&phone, &uri, "phone", true);
    assert!(stdout(&out).contains("accepted"), "{}", stderr(&out));
    assert_eq!(pending(), 0);
    // Second use: the PIN is spent; the request waits for an administrator.
    let again = TestEnv::device(&service);
    assert!(
        connect_by_uri(&again, &uri, "again", false)
            .status
            .success()
    );
    assert_eq!(pending(), 1);
    assert_eq!(again.mesh_json(&["account", "status"])["status"], "pending");
    let waiting = tablet.mesh_json(&["device", "pending"]);
    let code = waiting[0]["witness"].as_str().expect("a code");
    tablet.mesh(&["device", "reject", code]);

    // An expired PIN is not accepted either.
    let expired = pin(&["--expires", "0"]);
    let late = TestEnv::device(&service);
    assert!(
        connect_by_uri(&late, &expired, "late", false)
            .status
            .success()
    );
    assert_eq!(pending(), 1);
    assert_eq!(late.mesh_json(&["account", "status"])["status"], "pending");

    // A revoked device cannot come back with the PIN it joined by.
    tablet.mesh(&["device", "revoke", "phone"]);
    let back = TestEnv::device(&service);
    assert!(
        connect_by_uri(&back, &uri, "phone-again", false)
            .status
            .success()
    );
    assert_eq!(pending(), 2);

    // A hostile service answers for an account of its own made for the
    // same address, with a witness code that matches it: the URI names
    // the profile, so the device refuses before it waits for anyone (and
    // never joins, though the service passed its request on and the
    // administrator may take it: a PIN a hostile service saw is spent).
    let uri = pin(&[]);
    service.restart(Some("substitute"));
    let victim = TestEnv::device(&service);
    let refused = connect_by_uri(&victim, &uri, "victim", false);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains("another account than the one the URI names"),
        "{err}"
    );
    // (By address alone, with no profile to check, it would have joined
    // the service's account: it is waiting for that one's answer.)
    let fooled = TestEnv::device(&service);
    fooled.mesh(&["device", "connect", "alice@example.com", "--no-wait"]);
    let status = fooled.mesh_json(&["account", "status"]);
    assert_eq!(status["status"], "pending");
    assert_ne!(status["profile"], profile.as_str());
    service.restart(None);

    assert_eq!(victim.mesh_json(&["account", "status"])["status"], "none");
}

#[test]
fn exports_need_a_yes_and_secrets_stay_off_the_command_line() {
    let (_host, _service, tablet) = account();
    // A quorum of 1 makes each share the seed: refused before anyone is
    // asked.
    let err = stderr(&run_err(
        tablet
            .ours("mesh")
            .args(["account", "escrow", "--shares", "2", "--quorum", "1"]),
    ));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("quorum of at least 2"), "{err}");
    assert_eq!(tablet.askpass_log(), "", "nobody was asked");

    // Without a yes, no shares and no credential list.
    let err = stderr(&run_err(
        tablet
            .ours("mesh")
            .args(["account", "escrow", "--shares", "3", "--quorum", "2"]),
    ));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not confirmed"), "{err}");
    assert!(
        tablet.askpass_log().contains("recovery shares"),
        "{}",
        tablet.askpass_log()
    );
    tablet.catalog_put("credential", "git:https://git.example.com", "s3cret");
    let err = stderr(&run_err(tablet.ours("mesh").args([
        "catalog",
        "list",
        "credential",
    ])));
    assert!(err.contains("not confirmed"), "{err}");
    assert!(!err.contains("s3cret"), "the value was not sent: {err}");
    // One entry by name needs no question; the whole list, with a yes.
    let one = stdout(&tablet.mesh(&[
        "catalog",
        "get",
        "credential",
        "git:https://git.example.com",
    ]));
    assert_eq!(one, "s3cret\n");
    tablet.confirm(true);
    let listed = tablet.mesh_json(&["catalog", "list", "credential"]);
    assert_eq!(listed["git:https://git.example.com"], "s3cret");
    assert!(
        tablet.askpass_log().contains("Credential catalog"),
        "{}",
        tablet.askpass_log()
    );

    // On a terminal (a pty from util-linux `script`) the value is asked
    // for without echo: typed once the prompt shows (mesh turns echo off
    // before it prompts), it never shows.
    require_tool("script", "util-linux");
    let command = format!(
        "{} catalog put application typed",
        mesh_e2e::bin("mesh").display()
    );
    let mut child = tablet
        .command("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script runs");
    let mut screen = child.stdout.take().expect("stdout");
    let mut shown = Vec::new();
    while !String::from_utf8_lossy(&shown).contains("value of typed: ") {
        let mut chunk = [0u8; 256];
        let n = std::io::Read::read(&mut screen, &mut chunk).expect("the prompt");
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&shown));
        shown.extend_from_slice(&chunk[..n]);
    }
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"typed-value\n")
        .expect("typed");
    std::io::Read::read_to_end(&mut screen, &mut shown).expect("the rest");
    assert!(child.wait().expect("ends").success());
    let shown = String::from_utf8_lossy(&shown);
    assert!(!shown.contains("typed-value"), "echoed: {shown}");
    let one = stdout(&tablet.mesh(&["catalog", "get", "application", "typed"]));
    assert_eq!(one, "typed-value\n");

    // The old argv forms are refused with a one-line pointer to the new.
    let err = stderr(&run_err(tablet.ours("mesh").args([
        "catalog",
        "put",
        "credential",
        "git:https://git.example.com",
        "on-argv",
    ])));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not taken on the command line") && err.contains("standard input"),
        "{err}"
    );
    assert!(!err.contains("on-argv"), "the secret is not echoed: {err}");
    let one = stdout(&tablet.mesh(&[
        "catalog",
        "get",
        "credential",
        "git:https://git.example.com",
    ]));
    assert_eq!(one, "s3cret\n", "nothing was written");
    let fresh = TestEnv::new();
    let err = stderr(&run_err(fresh.ours("mesh").args([
        "account",
        "recover",
        "share-one",
        "share-two",
    ])));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not taken on the command line") && err.contains("one a line"),
        "{err}"
    );
    assert!(
        !fresh.control_socket().exists(),
        "refused before meshd was even started"
    );
}
