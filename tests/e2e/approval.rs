//! Approval from another device: a device with nobody at it (no display,
//! no askpass) signs with a key marked for confirmation only when another
//! device of the account says yes, through the service; no, no answer in
//! time, and answers the service forged or replayed all mean no.

use std::process::Output;

use mesh_e2e::{MeshService, Sshd, TestEnv, connect_device, run_ok, stderr, stdout, wait_until};

/// How long the headless device waits for an answer.
const TIMEOUT_MS: &str = "15000";

/// A laptop (administrator; with `desktop`, its askpass answers from a
/// file) and a headless server device of one account, a confirm-marked key made
/// on the laptop, and a real sshd that takes it.
struct Account {
    _host: TestEnv,
    service: MeshService,
    laptop: TestEnv,
    server: TestEnv,
    sshd: Sshd,
}

impl Account {
    fn new(desktop: bool) -> Account {
        let host = TestEnv::new();
        let service = MeshService::start(&host);
        let mut laptop = TestEnv::device(&service);
        if desktop {
            laptop.askpass_from_file();
        }
        laptop.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
        // Nothing to ask on: no DISPLAY, no SSH_ASKPASS (commands get an
        // empty environment but for what the test gives).
        let mut server = TestEnv::device(&service);
        server.set_var("MESH_APPROVAL_TIMEOUT_MS", TIMEOUT_MS);
        connect_device(&laptop, &server, "server", "device");
        laptop.mesh(&["ssh", "create", "guarded", "--confirm"]);
        let public = stdout(&laptop.mesh(&["ssh", "authorized-keys"]));
        let blob = public
            .split_whitespace()
            .nth(1)
            .expect("a key line")
            .to_owned();
        let sshd = Sshd::start(&server);
        sshd.authorize(&public);
        wait_until("the server serves the key", || {
            server.agent_keys().contains(&blob)
        });
        Account {
            _host: host,
            service,
            laptop,
            server,
            sshd,
        }
    }

    /// `ssh` from the server, with its meshd as the agent.
    fn login(&self) -> Output {
        self.sshd
            .login(&self.server, &self.server.ssh_auth_sock())
            .output()
            .expect("ssh runs")
    }

    /// The server's meshd log.
    fn server_log(&self) -> String {
        std::fs::read_to_string(self.server.home().join(".local/share/mesh/meshd.log"))
            .unwrap_or_default()
    }

    /// How many approval questions the laptop's person was shown.
    fn shown(&self) -> usize {
        self.laptop
            .askpass_log()
            .matches("Device server asks to use key guarded")
            .count()
    }
}

fn refused(account: &Account, what: &str, out: &Output) {
    assert!(
        !out.status.success() && !stdout(out).contains("logged-in"),
        "{what}: ssh logged in\n{}",
        account.server_log()
    );
}

#[test]
fn a_headless_device_signs_with_a_confirm_key_only_after_another_device_approves() {
    let mut account = Account::new(true);
    let host = stdout(&run_ok(
        account
            .laptop
            .command("ssh-keygen")
            .arg("-lf")
            .arg(account.sshd.known_hosts()),
    ))
    .split_whitespace()
    .nth(1)
    .expect("the host key's fingerprint")
    .to_owned();

    // The laptop says yes: the server logs in.
    account.laptop.confirm(true);
    let out = account.login();
    assert!(
        out.status.success() && stdout(&out).contains("logged-in"),
        "{}\n{}",
        stderr(&out),
        account.server_log()
    );
    let asked = account.laptop.askpass_log();
    assert_eq!(account.shown(), 1, "{asked}");
    assert!(
        asked.contains(&host),
        "the question names the host: {asked}"
    );
    assert!(
        asked.contains(" as "),
        "the question names the user: {asked}"
    );
    // The laptop's usage log shows the server's signature, confirmed.
    wait_until("the laptop's log shows the server's login", || {
        let uses = account.laptop.mesh_json(&["log"]);
        uses.as_array().is_some_and(|uses| {
            uses.iter().any(|u| {
                u["device"] == "server"
                    && u["key"] == "guarded"
                    && u["confirmed"] == true
                    && u["host"] == host.as_str()
            })
        })
    });

    // The laptop says no: refused.
    account.laptop.confirm(false);
    refused(&account, "a no", &account.login());
    assert_eq!(account.shown(), 2, "{}", account.laptop.askpass_log());
    assert!(account.server_log().contains("approved=false"));

    // The laptop is off. A replayed yes: the service serves the laptop's
    // genuine yes to the first request as the answer to a new one.
    account.laptop.mesh(&["daemon", "stop"]);
    account.service.restart(Some("replay-approval"));
    refused(&account, "a replayed yes", &account.login());
    assert!(
        account.server_log().contains("relabelled"),
        "{}",
        account.server_log()
    );

    // A yes the service made and signed itself.
    account.service.restart(Some("forge-approval"));
    refused(&account, "a forged yes", &account.login());
    assert!(account.server_log().contains("not signed by any device"));

    // Nobody answers: refused when the time is up.
    account.service.restart(None);
    let before = account
        .server_log()
        .matches("no device answered in time")
        .count();
    refused(&account, "no answer", &account.login());
    assert_eq!(
        account
            .server_log()
            .matches("no device answered in time")
            .count(),
        before + 1
    );
    assert_eq!(account.shown(), 2, "the laptop was off: nobody was asked");
}

#[test]
fn mesh_approve_answers_on_a_terminal() {
    // Somebody at the laptop's terminal, with no desktop to ask on.
    let account = Account::new(false);
    let ssh = account
        .sshd
        .login(&account.server, &account.server.ssh_auth_sock())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ssh runs");
    let mut listed = serde_json::Value::Null;
    wait_until("the laptop lists the request", || {
        listed = account.laptop.mesh_json(&["approve", "--list"]);
        listed.as_array().is_some_and(|l| l.len() == 1)
    });
    assert_eq!(listed[0]["device"], "server");
    assert_eq!(listed[0]["key"], "guarded");
    let out = mesh_e2e::with_input(account.laptop.ours("mesh").arg("approve"), "yes\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("approved: server using guarded"));
    let out = ssh.wait_with_output().expect("ssh ends");
    assert!(
        out.status.success() && stdout(&out).contains("logged-in"),
        "{}\n{}",
        stderr(&out),
        account.server_log()
    );
}

/// gpg in a device's throwaway GNUPGHOME, served by its meshd.
fn gpg(env: &TestEnv, args: &[&str]) -> Output {
    env.command("gpg")
        .args(["--batch", "--no-autostart", "--no-tty"])
        .args(args)
        .output()
        .expect("gpg runs")
}

#[test]
fn a_headless_device_signs_with_a_confirm_marked_gpg_key_only_after_another_device_approves() {
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let mut laptop = TestEnv::device(&service);
    laptop.askpass_from_file();
    laptop.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    let mut server = TestEnv::device(&service);
    server.set_var("MESH_APPROVAL_TIMEOUT_MS", TIMEOUT_MS);
    connect_device(&laptop, &server, "server", "device");
    let made = laptop.mesh_json(&[
        "openpgp",
        "create",
        "Alice <alice@example.com>",
        "--confirm",
    ]);
    let fingerprint = made["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    let listed = laptop.mesh_json(&["openpgp", "list"]);
    assert_eq!(listed[0]["confirm"], true, "{listed}");
    wait_until("the server's gpg lists the key's subkeys", || {
        let listed = stdout(&gpg(&server, &["--with-colons", "-K"]));
        listed.contains(&fingerprint) && listed.contains("\nssb:")
    });
    let message = server.root().join("message.txt");
    std::fs::write(&message, "deploy v1.2\n").expect("message");
    let m = message.to_str().expect("utf-8");
    let sig = format!("{m}.sig");
    let sign = || {
        let _ = std::fs::remove_file(&sig);
        gpg(
            &server,
            &["-u", &fingerprint, "--detach-sign", "-o", &sig, m],
        )
    };
    let server_log = || {
        std::fs::read_to_string(server.home().join(".local/share/mesh/meshd.log"))
            .unwrap_or_default()
    };
    let shown = || {
        laptop
            .askpass_log()
            .matches("Device server asks to use key alice@example.com")
            .count()
    };

    // The laptop says yes: gpg signs on the server.
    laptop.confirm(true);
    let out = sign();
    assert!(out.status.success(), "{}\n{}", stderr(&out), server_log());
    let verified = gpg(&server, &["--verify", &sig, m]);
    assert!(
        stderr(&verified).contains("Good signature"),
        "{}",
        stderr(&verified)
    );
    let asked = laptop.askpass_log();
    assert_eq!(shown(), 1, "{asked}");
    assert!(asked.contains("for gpg sign"), "{asked}");
    assert!(
        asked.contains("bin/gpg"),
        "the question names the program: {asked}"
    );
    wait_until(
        "the laptop's log shows the server's confirmed signature",
        || {
            let uses = laptop.mesh_json(&["log"]);
            uses.as_array().is_some_and(|uses| {
                uses.iter().any(|u| {
                    u["device"] == "server"
                        && u["operation"] == "gpg sign"
                        && u["key"] == "alice@example.com"
                        && u["confirmed"] == true
                })
            })
        },
    );

    // The laptop says no: gpg is refused, as by a cancelled pinentry.
    laptop.confirm(false);
    let out = sign();
    assert!(
        !out.status.success() && !std::path::Path::new(&sig).exists(),
        "signed after a no\n{}",
        server_log()
    );
    assert!(
        stderr(&out).contains("Operation cancelled"),
        "{}",
        stderr(&out)
    );
    assert_eq!(shown(), 2, "{}", laptop.askpass_log());
    assert!(server_log().contains("approved=false"), "{}", server_log());

    // The administrator switches confirmation off: once the server has
    // synced, gpg signs there without anybody being asked.
    laptop.mesh(&["openpgp", "set", "alice@example.com", "--no-confirm"]);
    let listed = laptop.mesh_json(&["openpgp", "list"]);
    assert_eq!(listed[0]["confirm"], false, "{listed}");
    wait_until("the server signs without asking", || {
        sign().status.success()
    });
    let before = shown();
    let out = sign();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(shown(), before, "{}", laptop.askpass_log());
}
