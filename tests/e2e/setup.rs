//! `mesh setup` and `mesh setup --undo` in a throwaway HOME.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use mesh_e2e::{TestEnv, bin, run_ok, stdout};

/// Every file under `dir`, with its text.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = fs::read_to_string(&path) {
                out.insert(path, text);
            }
        }
    }
    out
}

#[test]
fn setup_writes_what_it_says_twice_changes_nothing_and_undo_restores() {
    let env = TestEnv::new();
    let home = env.home();
    let profile = home.join(".profile");
    fs::write(&profile, "export EDITOR=vi\n").expect("profile");
    fs::set_permissions(&profile, fs::Permissions::from_mode(0o644)).expect("mode");
    let gpg_conf = env.gnupg_home().join("gpg.conf");
    fs::write(&gpg_conf, "keyid-format long\n").expect("gpg.conf");
    let config = home.join(".config");
    let before = snapshot(&home);

    let first = stdout(&env.mesh(&["setup"]));
    let units = config.join("systemd/user");
    let meshd = bin("meshd");
    for unit in [
        "meshd.service",
        "meshd-control.socket",
        "meshd-ssh-agent.socket",
        "meshd-gpg-agent.socket",
    ] {
        let path = units.join(unit);
        assert!(
            first.contains(&format!("wrote {}", path.display())),
            "{first}"
        );
        assert!(path.is_file());
    }
    let service = fs::read_to_string(units.join("meshd.service")).expect("service");
    assert!(
        service.contains(&format!("ExecStart={}", meshd.display())),
        "{service}"
    );
    let env_d = fs::read_to_string(config.join("environment.d/50-mesh.conf")).expect("env.d");
    assert!(env_d.contains("SSH_AUTH_SOCK=${XDG_RUNTIME_DIR}/mesh/ssh-agent.sock"));
    let profile_now = fs::read_to_string(&profile).expect("profile");
    assert!(
        profile_now.starts_with("export EDITOR=vi\n"),
        "{profile_now}"
    );
    let sourced = run_ok(
        env.command("sh")
            .arg("-c")
            .arg(". \"$HOME/.profile\"; printf %s \"$SSH_AUTH_SOCK\""),
    );
    assert_eq!(stdout(&sourced), env.ssh_auth_sock().display().to_string());
    let gpg_now = fs::read_to_string(&gpg_conf).expect("gpg.conf");
    assert!(gpg_now.starts_with("keyid-format long\n"));
    assert!(gpg_now.contains(&format!(
        "agent-program {}",
        bin("mesh-gpg-agent").display()
    )));
    assert!(first.contains("SSH_AUTH_SOCK="), "{first}");

    // Twice: nothing more.
    let after_first = snapshot(&home);
    let second = stdout(&env.mesh(&["setup"]));
    assert!(
        second.contains("already set up: nothing changed"),
        "{second}"
    );
    assert_eq!(snapshot(&home), after_first);

    // Undo: every file as it was, modes included.
    let undone = stdout(&env.mesh(&["setup", "--undo"]));
    assert!(
        undone.contains(&format!("restored {}", profile.display())),
        "{undone}"
    );
    assert!(undone.contains(&format!(
        "removed {}",
        units.join("meshd.service").display()
    )));
    assert_eq!(
        snapshot(&home),
        before,
        "undo left something behind or changed"
    );
    let mode = fs::metadata(&profile)
        .expect("profile")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    let again = stdout(&env.mesh(&["setup", "--undo"]));
    assert!(again.contains("nothing to undo"));
}

#[test]
fn setup_git_signs_commits_with_account_keys_and_undo_forgets() {
    let host = TestEnv::new();
    let service = mesh_e2e::MeshService::start(&host);
    let env = TestEnv::device(&service);
    env.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    env.mesh(&["ssh", "create", "work"]);
    let fingerprint =
        env.mesh_json(&["openpgp", "create", "Alice <alice@example.com>"])["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_owned();
    mesh_e2e::wait_until("gpg knows the certificate", || {
        env.gpg_has_secret_key(&fingerprint)
    });
    let repo = env.root().join("repo");
    fs::create_dir_all(&repo).expect("repo");
    let git = |args: &[&str]| {
        run_ok(
            env.command("git")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("SSH_AUTH_SOCK", env.ssh_auth_sock())
                .arg("-C")
                .arg(&repo)
                .args([
                    "-c",
                    "user.name=Alice",
                    "-c",
                    "user.email=alice@example.com",
                ])
                .args(args),
        )
    };
    git(&["init", "-q"]);

    let said = stdout(&env.mesh(&["setup", "git", "--ssh"]));
    assert!(said.contains("set git gpg.format = ssh"), "{said}");
    fs::write(repo.join("a"), "a\n").expect("file");
    git(&["add", "a"]);
    git(&["commit", "-q", "-m", "signed with the account's SSH key"]);
    let verified = git(&["verify-commit", "HEAD"]);
    assert!(mesh_e2e::stderr(&verified).contains("Good \"git\" signature for alice@example.com"));

    env.mesh(&["setup", "git", "--openpgp"]);
    fs::write(repo.join("b"), "b\n").expect("file");
    git(&["add", "b"]);
    git(&[
        "commit",
        "-q",
        "-m",
        "signed with the account's OpenPGP key",
    ]);
    let verified = git(&["verify-commit", "HEAD"]);
    assert!(
        mesh_e2e::stderr(&verified).contains("Good signature from \"Alice <alice@example.com>\"")
    );

    env.mesh(&["setup", "--undo"]);
    assert!(
        !env.home().join(".gitconfig").exists(),
        "git's config was not there before"
    );
    assert!(!env.home().join(".config/mesh/allowed_signers").exists());
}
