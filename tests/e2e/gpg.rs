//! meshd in place of gpg-agent, driven by the real gpg 2.2 and git, each
//! test in its own GNUPGHOME.

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use mesh_e2e::{MeshService, TestEnv, connect_device, run_ok, stderr, stdout, wait_until};

/// An account on a fresh service, with `first` as its administrator.
fn account() -> (TestEnv, MeshService, TestEnv) {
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let first = TestEnv::device(&service);
    first.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    (host, service, first)
}

/// Run gpg in this home; it never starts an agent of its own.
fn gpg(env: &TestEnv, args: &[&str]) -> std::process::Output {
    env.command("gpg")
        .args(["--batch", "--no-autostart", "--no-tty"])
        .args(args)
        .output()
        .expect("gpg runs")
}

fn gpg_ok(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let out = gpg(env, args);
    assert!(
        out.status.success(),
        "gpg {args:?} failed:\n{}",
        stderr(&out)
    );
    out
}

/// Wait until gpg lists this key as a usable secret key.
fn wait_for_secret_key(env: &TestEnv, fingerprint: &str) {
    wait_until("gpg -K lists the Mesh key", || {
        let out = gpg(env, &["--with-colons", "-K"]);
        let text = stdout(&out);
        let mut lines = text
            .lines()
            .skip_while(|l| !(l.starts_with("fpr:") && l.contains(fingerprint)));
        // Listed with its subkeys, and ultimately trusted as meshd imports
        // it (the trust comes a moment after the key).
        lines.next().is_some()
            && lines.clone().any(|l| l.starts_with("ssb:"))
            && lines
                .find(|l| l.starts_with("uid:"))
                .is_some_and(|l| l.starts_with("uid:u:"))
    });
}

fn create(env: &TestEnv, user_id: &str, alg: &str) -> String {
    let made = env.mesh_json(&["openpgp", "create", user_id, "--alg", alg]);
    made["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned()
}

/// Sign three ways with `key` and check gpg verifies each; encrypt to it
/// and decrypt.
fn sign_and_decrypt(env: &TestEnv, key: &str) {
    let dir = env.root().join(format!("work-{key}"));
    fs::create_dir_all(&dir).expect("dir");
    let message = dir.join("message.txt");
    fs::write(&message, "the quick brown fox\n").expect("message");
    let m = message.to_str().expect("utf-8");
    let out = |name: &str| dir.join(name).to_str().expect("utf-8").to_owned();

    gpg_ok(
        env,
        &["-u", key, "--detach-sign", "-o", &out("detached.sig"), m],
    );
    let verified = gpg_ok(env, &["--verify", &out("detached.sig"), m]);
    assert!(
        stderr(&verified).contains("Good signature"),
        "{}",
        stderr(&verified)
    );

    gpg_ok(env, &["-u", key, "--clearsign", "-o", &out("clear.asc"), m]);
    let verified = gpg_ok(env, &["--verify", &out("clear.asc")]);
    assert!(stderr(&verified).contains("Good signature"));

    gpg_ok(env, &["-u", key, "-s", "-o", &out("signed.gpg"), m]);
    let verified = gpg_ok(env, &["-o", &out("unpacked.txt"), "-d", &out("signed.gpg")]);
    assert!(stderr(&verified).contains("Good signature"));

    gpg_ok(env, &["-r", key, "-e", "-o", &out("secret.gpg"), m]);
    let plain = gpg_ok(env, &["-d", &out("secret.gpg")]);
    assert_eq!(stdout(&plain), "the quick brown fox\n");
}

#[test]
fn gpg_signs_decrypts_and_signs_git_commits_with_mesh_keys() {
    let (_host, _service, laptop) = account();
    let ed = create(&laptop, "Alice <alice@example.com>", "ed25519");
    let rsa = create(&laptop, "Rob <rob@example.com>", "rsa3072");
    let nist = create(&laptop, "Nina <nina@example.com>", "nistp256");
    wait_for_secret_key(&laptop, &ed);
    wait_for_secret_key(&laptop, &rsa);
    wait_for_secret_key(&laptop, &nist);
    let listed = stdout(&gpg_ok(&laptop, &["-K"]));
    assert!(
        listed.contains("[ultimate] Alice <alice@example.com>"),
        "{listed}"
    );
    assert!(listed.contains("rsa3072"), "{listed}");
    sign_and_decrypt(&laptop, &ed);
    sign_and_decrypt(&laptop, &rsa);
    sign_and_decrypt(&laptop, &nist);

    // git commit -S with gpg.format=openpgp, then verify-commit.
    let repo = laptop.root().join("repo");
    fs::create_dir_all(&repo).expect("repo");
    let git = |args: &[&str]| {
        run_ok(
            laptop
                .command("git")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .arg("-C")
                .arg(&repo)
                .args(args),
        )
    };
    git(&["init", "-q"]);
    for (key, value) in [
        ("user.name", "Alice"),
        ("user.email", "alice@example.com"),
        ("gpg.format", "openpgp"),
        ("user.signingkey", ed.as_str()),
    ] {
        git(&["config", key, value]);
    }
    fs::write(repo.join("README"), "hello\n").expect("file");
    git(&["add", "README"]);
    git(&["commit", "-q", "-S", "-m", "signed through meshd"]);
    let verified = git(&["verify-commit", "HEAD"]);
    assert!(
        stderr(&verified).contains("Good signature from \"Alice <alice@example.com>\""),
        "{}",
        stderr(&verified)
    );

    // Export gives the public certificate; delete takes the key away.
    let exported = stdout(&laptop.mesh(&["openpgp", "export", "rob@example.com"]));
    assert!(exported.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert!(!exported.contains("PRIVATE"));
    laptop.mesh(&["openpgp", "delete", "rob@example.com"]);
    let message = laptop.root().join("late.txt");
    fs::write(&message, "late\n").expect("message");
    let refused = gpg(
        &laptop,
        &[
            "-u",
            &rsa,
            "--detach-sign",
            message.to_str().expect("utf-8"),
        ],
    );
    assert!(!refused.status.success(), "a deleted key still signs");
}

#[test]
fn a_key_made_on_one_device_signs_on_another() {
    let (_host, service, laptop) = account();
    let desktop = TestEnv::device(&service);
    connect_device(&laptop, &desktop, "desktop", "device");
    let ed = create(&laptop, "Alice <alice@example.com>", "ed25519");
    wait_for_secret_key(&desktop, &ed);
    sign_and_decrypt(&desktop, &ed);
}

/// The agent socket gpg uses in this home.
fn agent_socket(env: &TestEnv) -> PathBuf {
    let out = run_ok(env.command("gpgconf").args(["--list-dirs", "agent-socket"]));
    PathBuf::from(stdout(&out).trim())
}

/// A raw Assuan client: connect, read the greeting.
fn connect(socket: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let stream = UnixStream::connect(socket).expect("connects");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("greeting");
    assert!(greeting.starts_with("OK"), "{greeting}");
    (reader, stream)
}

/// Send lines; return every line up to the final OK or ERR.
fn send(conn: &mut (BufReader<UnixStream>, UnixStream), lines: &[&[u8]]) -> Vec<String> {
    for line in lines {
        conn.1.write_all(line).expect("write");
        conn.1.write_all(b"\n").expect("write");
    }
    let mut out = Vec::new();
    loop {
        let mut raw = Vec::new();
        if conn.0.read_until(b'\n', &mut raw).expect("read") == 0 {
            out.push("<closed>".to_owned());
            return out;
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
        let done = line.starts_with("OK") || line.starts_with("ERR") || line.starts_with("INQUIRE");
        out.push(line);
        if done {
            return out;
        }
    }
}

#[test]
fn hostile_input_gets_the_right_error_and_nobody_else_suffers() {
    let (_host, _service, laptop) = account();
    let ed = create(&laptop, "Alice <alice@example.com>", "ed25519");
    wait_for_secret_key(&laptop, &ed);
    let grips: Vec<String> = stdout(&gpg_ok(&laptop, &["--with-colons", "--with-keygrip", "-K"]))
        .lines()
        .filter_map(|l| l.strip_prefix("grp:::::::::"))
        .map(|g| g.trim_end_matches(':').to_owned())
        .collect();
    // Primary (not served), signing subkey, two encryption subkeys.
    let (sign_grip, encrypt_grip) = (&grips[1], &grips[2]);
    let socket = agent_socket(&laptop);
    let mut bystander = connect(&socket);
    let mut conn = connect(&socket);

    // An unknown keygrip.
    let unknown = "0123456789ABCDEF0123456789ABCDEF01234567";
    let reply = send(
        &mut conn,
        &[
            format!("SIGKEY {unknown}").as_bytes(),
            format!("SETHASH 8 {}", "00".repeat(32)).as_bytes(),
            b"PKSIGN",
        ],
    );
    assert_eq!(reply, ["OK"], "SIGKEY answers OK like gpg-agent");
    assert_eq!(send(&mut conn, &[]), ["OK"]);
    assert_eq!(
        send(&mut conn, &[]),
        ["ERR 67108881 No secret key <GPG Agent>"]
    );
    assert_eq!(
        send(&mut conn, &[format!("HAVEKEY {unknown}").as_bytes()]),
        ["ERR 67108881 No secret key <GPG Agent>"]
    );
    assert_eq!(
        send(&mut conn, &[format!("KEYINFO {unknown}").as_bytes()]),
        ["ERR 67108891 Not found <GPG Agent>"]
    );
    assert_eq!(
        send(&mut conn, &[b"SIGKEY not-hex"]),
        ["ERR 67109144 IPC parameter error <GPG Agent>"]
    );
    assert_eq!(
        send(&mut conn, &[b"SETHASH 99 00"]),
        ["ERR 67108948 Unsupported algorithm <GPG Agent>"]
    );

    // A malformed S-expression as ciphertext.
    let mut reply = send(
        &mut conn,
        &[format!("SETKEY {encrypt_grip}").as_bytes(), b"PKDECRYPT"],
    );
    reply.extend(send(&mut conn, &[]));
    assert_eq!(reply.last().map(String::as_str), Some("INQUIRE CIPHERTEXT"));
    assert_eq!(
        send(&mut conn, &[b"D (7:enc-val(4:ecdh", b"END"]),
        ["ERR 67108947 Invalid S-expression <GPG Agent>"]
    );

    // A ciphertext for another kind of key (RSA, to an ECDH key).
    send(&mut conn, &[b"PKDECRYPT"]);
    assert_eq!(
        send(&mut conn, &[b"D (7:enc-val(3:rsa(1:a3:abc)))", b"END"]),
        ["ERR 67108943 Invalid data <GPG Agent>"]
    );

    // A signature asked of the encryption key.
    let reply = send(&mut conn, &[format!("SIGKEY {encrypt_grip}").as_bytes()]);
    assert_eq!(reply, ["OK"]);
    send(
        &mut conn,
        &[format!("SETHASH 8 {}", "11".repeat(32)).as_bytes()],
    );
    assert_eq!(
        send(&mut conn, &[b"PKSIGN"]),
        ["ERR 67108943 Invalid data <GPG Agent>"]
    );

    // The other commands gpg 2.2 and 2.4 send.
    let listed = send(&mut conn, &[b"HAVEKEY --list=1000"]);
    assert_eq!(listed.last().map(String::as_str), Some("OK"), "{listed:?}");
    assert_eq!(
        send(&mut conn, &[b"HAVEKEY --list=1"]),
        ["ERR 67108938 Result truncated <GPG Agent>"]
    );
    let public = send(&mut conn, &[format!("READKEY {sign_grip}").as_bytes()]);
    assert!(
        public[0].starts_with("D (10:public-key(3:ecc(5:curve7:Ed25519)"),
        "{public:?}"
    );
    let info = send(&mut conn, &[format!("KEYINFO {sign_grip}").as_bytes()]);
    assert_eq!(
        info,
        [
            format!("S KEYINFO {sign_grip} D - - - C - - -"),
            "OK".to_owned()
        ]
    );
    assert_eq!(
        send(&mut conn, &[b"SCD SERIALNO"]),
        ["ERR 67108983 No SmartCard daemon <GPG Agent>"]
    );
    assert_eq!(
        send(&mut conn, &[b"OPTION ttytype=xterm", b"option lc-ctype=C"]),
        ["OK"]
    );
    assert_eq!(send(&mut conn, &[]), ["OK"]);

    // An unknown command, then a good signature on the same connection.
    assert_eq!(
        send(&mut conn, &[b"FROBNICATE"]),
        ["ERR 67109139 Unknown IPC command <GPG Agent>"]
    );
    send(&mut conn, &[format!("SIGKEY {sign_grip}").as_bytes()]);
    send(
        &mut conn,
        &[format!("SETHASH 8 {}", "22".repeat(32)).as_bytes()],
    );
    let signed = send(&mut conn, &[b"PKSIGN"]);
    assert!(signed[0].starts_with("D (7:sig-val(5:eddsa"), "{signed:?}");
    assert_eq!(signed.last().map(String::as_str), Some("OK"));

    // An overlong line: the error, then the connection is closed.
    // (The agent may close before it has read all of it: a write error
    // here is the agent doing its job.)
    let mut long = vec![b'X'; 1100];
    long.push(b'\n');
    let _ = conn.1.write_all(&long);
    let mut reply = String::new();
    conn.0.read_line(&mut reply).expect("the error line");
    assert_eq!(
        reply.trim_end(),
        "ERR 67109127 Line passed to IPC too long <GPG Agent>"
    );
    let mut rest = Vec::new();
    let _ = conn.0.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // The bystander was never disturbed.
    let version = send(&mut bystander, &[b"GETINFO version"]);
    assert!(version[0].starts_with("D 2."), "{version:?}");
    assert_eq!(version[1], "OK");
    // The calibrated S2K count gpg -c uses, and the time it is for.
    let count = send(&mut bystander, &[b"GETINFO s2k_count"]);
    let count: u64 = count[0]
        .strip_prefix("D ")
        .and_then(|c| c.parse().ok())
        .expect("a count");
    assert!(count >= 65536 && count.is_multiple_of(1024), "{count}");
    assert_eq!(
        send(&mut bystander, &[b"GETINFO s2k_time"]),
        ["D 100", "OK"]
    );
}

#[test]
fn gpg_starts_meshd_and_never_the_real_agent() {
    let (_host, _service, laptop) = account();
    let made = stdout(&laptop.mesh(&["openpgp", "create", "Alice <alice@example.com>"]));
    assert!(
        made.contains("agent-program"),
        "mesh says what it configured: {made}"
    );
    let conf = fs::read_to_string(laptop.gnupg_home().join("gpg.conf")).expect("gpg.conf");
    assert!(
        conf.contains("agent-program ") && conf.contains("mesh-gpg-agent"),
        "{conf}"
    );
    let fingerprint = made
        .split_whitespace()
        .nth(2)
        .expect("fingerprint")
        .to_owned();
    wait_for_secret_key(&laptop, &fingerprint);

    // With meshd stopped, gpg (allowed to autostart) starts meshd.
    laptop.mesh(&["daemon", "stop"]);
    let listed = run_ok(
        laptop
            .command("gpg")
            .args(["--batch", "--with-colons", "-K"]),
    );
    assert!(
        stdout(&listed).contains(&fingerprint),
        "{}",
        stdout(&listed)
    );
    let status = laptop.mesh_json(&["status"]);
    assert!(status["pid"].is_u64(), "meshd runs again: {status}");
    assert!(
        status["listeners"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["frontend"] == "gpg-agent")),
        "{status}"
    );
    let home = laptop.gnupg_home();
    let real = std::process::Command::new("pgrep")
        .args(["-f", &format!("gpg-agent --homedir {}", home.display())])
        .output()
        .expect("pgrep runs");
    assert!(
        stdout(&real).trim().is_empty(),
        "a real gpg-agent was started"
    );
}

#[test]
fn an_exported_gpg_secret_key_is_imported_and_used() {
    // A key made the usual way, by gpg and its real agent, in a home of
    // its own; exported unprotected.
    let maker = TestEnv::new();
    run_ok(maker.command("gpg").args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        "Carol <carol@example.com>",
        "ed25519",
        "sign",
        "0",
    ]));
    let fpr_out = run_ok(maker.command("gpg").args(["--with-colons", "-K"]));
    let fingerprint = stdout(&fpr_out)
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .map(|f| f.trim_end_matches(':').to_owned())
        .expect("fingerprint");
    run_ok(maker.command("gpg").args([
        "--batch",
        "--passphrase",
        "",
        "--quick-add-key",
        &fingerprint,
        "cv25519",
        "encr",
        "0",
    ]));
    let exported = run_ok(maker.command("gpg").args([
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--armor",
        "--export-secret-keys",
        &fingerprint,
    ]));
    let _ = maker
        .command("gpgconf")
        .args(["--kill", "gpg-agent"])
        .status();
    let file = maker.root().join("carol.asc");
    fs::write(&file, &exported.stdout).expect("export");

    let (_host, _service, laptop) = account();
    let imported = laptop.mesh_json(&["openpgp", "import", file.to_str().expect("utf-8")]);
    assert_eq!(imported["fingerprint"], fingerprint.as_str());
    assert_eq!(imported["name"], "carol@example.com");
    wait_for_secret_key(&laptop, &fingerprint);
    sign_and_decrypt(&laptop, &fingerprint);
}

#[test]
fn gpg_encrypts_and_decrypts_with_a_passphrase_through_meshd() {
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let mut laptop = TestEnv::device(&service);
    // The desktop's askpass, for passphrases gpg does not give itself:
    // it logs the question and types "correct horse".
    let script = laptop.root().join("askpass");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}/askpass.log\necho 'correct horse'\n",
            laptop.root().display()
        ),
    )
    .expect("askpass");
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    laptop.set_var("SSH_ASKPASS", &script);
    laptop.set_var("SSH_ASKPASS_REQUIRE", "force");
    laptop.set_var("DISPLAY", ":0");
    laptop.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    let plain = laptop.root().join("plain.txt");
    fs::write(&plain, "symmetric secret\n").expect("plain");
    // (gpg runs with --no-autostart: only meshd can answer it.)
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();

    // gpg gives the passphrase itself (loopback): meshd asks gpg for it.
    let sealed = laptop.root().join("loopback.gpg");
    let loopback = [
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "battery staple",
    ];
    let mut args = loopback.to_vec();
    let (sealed_path, plain_path) = (path(&sealed), path(&plain));
    args.extend(["-o", &sealed_path, "--symmetric", &plain_path]);
    gpg_ok(&laptop, &args);
    let mut args = loopback.to_vec();
    args.extend(["-d", &sealed_path]);
    assert_eq!(stdout(&gpg_ok(&laptop, &args)), "symmetric secret\n");
    let wrong = gpg(
        &laptop,
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "wrong",
            "-d",
            &sealed_path,
        ],
    );
    assert!(!wrong.status.success());

    // Otherwise meshd asks the user through askpass.
    let asked = laptop.root().join("asked.gpg");
    let asked_path = path(&asked);
    gpg_ok(&laptop, &["-o", &asked_path, "--symmetric", &plain_path]);
    assert_eq!(
        stdout(&gpg_ok(&laptop, &["-d", &asked_path])),
        "symmetric secret\n"
    );
    let log = fs::read_to_string(laptop.root().join("askpass.log")).expect("askpass asked");
    assert!(log.lines().count() >= 2, "{log}");
}

#[test]
fn gpg_card_status_says_there_is_no_card() {
    let (_host, _service, laptop) = account();
    let out = gpg(&laptop, &["--card-status"]);
    let said = stderr(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("OpenPGP card not available: No SmartCard daemon"),
        "{said}"
    );
}

#[test]
fn a_certificate_gpg_could_not_import_yet_is_imported_when_it_can() {
    // gpg's keyring refuses imports for a while (as with gpg 2.4's
    // keyboxd not running yet): a gpg in front of the real one fails
    // every --import while the file `refuse` exists, and says so.
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let mut laptop = TestEnv::device(&service);
    let bin_dir = laptop.root().join("bin");
    fs::create_dir_all(&bin_dir).expect("bin");
    mesh_e2e::require_tool("gpg", "gnupg");
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("gpg"))
        .find(|candidate| candidate.is_file())
        .expect("gpg");
    let refuse = laptop.root().join("refuse");
    let refused = laptop.root().join("refused.log");
    fs::write(
        bin_dir.join("gpg"),
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = --import ] && [ -e {refuse} ]; then \
             echo refused >> {refused}; exit 2; fi; done\nexec {real} \"$@\"\n",
            refuse = refuse.display(),
            refused = refused.display(),
            real = real.display()
        ),
    )
    .expect("wrapper");
    fs::set_permissions(
        bin_dir.join("gpg"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    laptop.set_var("PATH", &path);
    fs::write(&refuse, "").expect("refuse");
    laptop.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    let create = laptop
        .ours("mesh")
        .args(["openpgp", "create", "Alice <alice@example.com>", "--json"])
        .spawn()
        .expect("mesh runs");
    wait_until("meshd tried to import and was refused", || {
        fs::read_to_string(&refused).is_ok_and(|r| !r.is_empty())
    });
    // The keyring takes imports again: with no other change in the
    // account, meshd tries again and gpg gets the certificate.
    fs::remove_file(&refuse).expect("refuse");
    let done = create.wait_with_output().expect("mesh ends");
    assert!(done.status.success());
    wait_until("gpg's keyring holds the certificate", || {
        stdout(&gpg(&laptop, &["--with-colons", "-k"])).contains("alice@example.com")
    });
}

/// Run gpg in this home with `input` on its standard input.
fn gpg_with_input(env: &TestEnv, args: &[&str], input: &str) -> std::process::Output {
    let mut child = env
        .command("gpg")
        .args(["--batch", "--no-autostart", "--no-tty"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gpg runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("input");
    child.wait_with_output().expect("gpg ends")
}

/// The fingerprint of the first secret key gpg lists in `env`.
fn first_fingerprint(env: &TestEnv) -> String {
    fingerprint_of(env, &[])
}

/// The fingerprint of the first secret key gpg lists for `query`.
fn fingerprint_of(env: &TestEnv, query: &[&str]) -> String {
    let out = run_ok(env.command("gpg").args(["--with-colons", "-K"]).args(query));
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .map(|f| f.trim_end_matches(':').to_owned())
        .expect("fingerprint")
}

/// A key made by gpg and its real agent in a home of its own, protected
/// by `passphrase` (empty: none), with signing and encryption subkeys;
/// exported as gpg exports it, and the real agent stopped.
fn made_by_real_gpg(user_id: &str, algorithms: [&str; 3], passphrase: &str) -> (String, Vec<u8>) {
    let maker = TestEnv::new();
    let with_passphrase = [
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        passphrase,
    ];
    run_ok(maker.command("gpg").args(with_passphrase).args([
        "--quick-gen-key",
        user_id,
        algorithms[0],
        "cert",
        "0",
    ]));
    let fingerprint = first_fingerprint(&maker);
    for (algorithm, usage) in [(algorithms[1], "sign"), (algorithms[2], "encr")] {
        run_ok(maker.command("gpg").args(with_passphrase).args([
            "--quick-add-key",
            &fingerprint,
            algorithm,
            usage,
            "0",
        ]));
    }
    let exported = run_ok(maker.command("gpg").args(with_passphrase).args([
        "--armor",
        "--export-secret-keys",
        &fingerprint,
    ]));
    let _ = maker
        .command("gpgconf")
        .args(["--kill", "gpg-agent"])
        .status();
    (fingerprint, exported.stdout)
}

/// A detached signature by `key` that gpg verifies.
fn signs(env: &TestEnv, key: &str) {
    let message = env.root().join("signed.txt");
    fs::write(&message, "signed\n").expect("message");
    let m = message.to_str().expect("utf-8");
    let sig = format!("{m}.sig");
    let _ = fs::remove_file(&sig);
    gpg_ok(env, &["-u", key, "--detach-sign", "-o", &sig, m]);
    let verified = gpg_ok(env, &["--verify", &sig, m]);
    assert!(stderr(&verified).contains("Good signature"));
}

/// Wait until the account lists this certificate.
fn wait_in_mesh(env: &TestEnv, fingerprint: &str) {
    wait_until("the account has the certificate", || {
        env.mesh_json(&["openpgp", "list"])
            .to_string()
            .contains(fingerprint)
    });
}

#[test]
fn gpg_import_puts_secret_keys_in_the_mesh_for_every_device() {
    let (dave, protected) = made_by_real_gpg(
        "Dave <dave@example.com>",
        ["ed25519", "ed25519", "cv25519"],
        "correct horse",
    );
    let (erin, unprotected) = made_by_real_gpg(
        "Erin <erin@example.com>",
        ["rsa2048", "rsa2048", "rsa2048"],
        "",
    );
    let (_host, service, laptop) = account();
    let desktop = TestEnv::device(&service);
    connect_device(&laptop, &desktop, "desktop", "device");
    let file = laptop.root().join("keys.asc");
    let import = |passphrase: &str, keys: &[u8]| {
        fs::write(&file, keys).expect("keys");
        gpg_with_input(
            &laptop,
            &[
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
                "--import",
                file.to_str().expect("utf-8"),
            ],
            &format!("{passphrase}\n"),
        )
    };

    // The wrong passphrase: gpg says so and the Mesh gets nothing.
    let refused = import("wrong", &protected);
    assert!(
        stderr(&refused).contains("Bad passphrase"),
        "{}",
        stderr(&refused)
    );
    let imported = import("correct horse", &protected);
    assert!(imported.status.success(), "{}", stderr(&imported));
    // Served at once, before the account has it.
    signs(&laptop, &dave);
    let imported = import("", &unprotected);
    assert!(imported.status.success(), "{}", stderr(&imported));
    signs(&laptop, &erin);
    // Again: gpg hears the agent has the keys.
    let again = import("correct horse", &protected);
    assert!(
        stderr(&again).contains("secret keys unchanged"),
        "{}",
        stderr(&again)
    );

    for key in [&dave, &erin] {
        wait_in_mesh(&laptop, key);
        // Trusted once meshd has the certificate from the account.
        wait_for_secret_key(&laptop, key);
        sign_and_decrypt(&laptop, key);
        wait_for_secret_key(&desktop, key);
        sign_and_decrypt(&desktop, key);
    }
}

#[test]
fn gpg_makes_keys_in_the_mesh() {
    let (_host, service, laptop) = account();
    let made = gpg_with_input(
        &laptop,
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--quick-gen-key",
            "Frank <frank@example.com>",
            "future-default",
            "default",
            "0",
        ],
        "\n",
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let frank = first_fingerprint(&laptop);
    sign_and_decrypt(&laptop, &frank);
    // A subkey added later: RSA, made by meshd too.
    let added = gpg_with_input(
        &laptop,
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--quick-add-key",
            &frank,
            "rsa2048",
            "sign",
            "0",
        ],
        "\n",
    );
    assert!(added.status.success(), "{}", stderr(&added));
    signs(&laptop, &frank);
    wait_in_mesh(&laptop, &frank);

    // What --full-gen-key asks, from a parameter file: RSA, and a NIST
    // P-256 encryption subkey (made as an ECDSA key, stored as ECDH).
    let params = laptop.root().join("grace.params");
    fs::write(
        &params,
        "Key-Type: RSA\nKey-Length: 2048\nKey-Usage: sign,cert\n\
         Subkey-Type: ECDH\nSubkey-Curve: nistp256\nSubkey-Usage: encrypt\n\
         Name-Real: Grace\nName-Email: grace@example.com\nExpire-Date: 0\n\
         %no-protection\n%commit\n",
    )
    .expect("parameters");
    gpg_ok(&laptop, &["--gen-key", params.to_str().expect("utf-8")]);
    let grace = fingerprint_of(&laptop, &["grace@example.com"]);
    sign_and_decrypt(&laptop, &grace);
    wait_in_mesh(&laptop, &grace);

    // Another device serves the subkeys: the later one signs there.
    let desktop = TestEnv::device(&service);
    connect_device(&laptop, &desktop, "desktop", "device");
    wait_for_secret_key(&desktop, &frank);
    sign_and_decrypt(&desktop, &frank);
    // Grace's only signing key is her primary key, which stays with the
    // administrators; her P-256 subkey decrypts there.
    wait_for_secret_key(&desktop, &grace);
    let message = desktop.root().join("to-grace.txt");
    fs::write(&message, "for grace\n").expect("message");
    let m = message.to_str().expect("utf-8");
    let sealed = format!("{m}.gpg");
    gpg_ok(&desktop, &["-r", &grace, "-e", "-o", &sealed, m]);
    assert_eq!(stdout(&gpg_ok(&desktop, &["-d", &sealed])), "for grace\n");

    // A device that is not an administrator adds no keys.
    let refused = gpg(
        &desktop,
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Mallory <mallory@example.com>",
            "ed25519",
            "sign",
            "0",
        ],
    );
    assert!(!refused.status.success(), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("Forbidden"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn gpg_import_asks_askpass_once_for_a_protected_key() {
    let (fingerprint, protected) = made_by_real_gpg(
        "Heidi <heidi@example.com>",
        ["ed25519", "ed25519", "cv25519"],
        "correct horse",
    );
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let mut laptop = TestEnv::device(&service);
    // Without loopback, meshd asks the user: this askpass logs the
    // question and types the passphrase.
    let script = laptop.root().join("askpass");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}/askpass.log\necho 'correct horse'\n",
            laptop.root().display()
        ),
    )
    .expect("askpass");
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    laptop.set_var("SSH_ASKPASS", &script);
    laptop.set_var("SSH_ASKPASS_REQUIRE", "force");
    laptop.set_var("DISPLAY", ":0");
    laptop.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    let file = laptop.root().join("heidi.asc");
    fs::write(&file, &protected).expect("keys");
    gpg_ok(&laptop, &["--import", file.to_str().expect("utf-8")]);
    // Three keys, one question: gpg names the passphrase that opened the
    // first (its cache nonce) when it hands over the others.
    let log = fs::read_to_string(laptop.root().join("askpass.log")).expect("askpass asked");
    assert_eq!(log.matches("OpenPGP secret key").count(), 1, "{log}");
    wait_in_mesh(&laptop, &fingerprint);
    wait_for_secret_key(&laptop, &fingerprint);
    sign_and_decrypt(&laptop, &fingerprint);
}
