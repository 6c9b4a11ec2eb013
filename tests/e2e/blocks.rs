//! The building blocks through `mesh udf`, `mesh key` and `mesh dare`, as
//! a person or a script would use them.

use std::fs;

use mesh_e2e::{TestEnv, run_err, stderr, stdout, with_input};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Run `mesh` with args, require failure, and return its one-line error.
fn one_line_error(env: &TestEnv, args: &[&str]) -> String {
    let err = stderr(&run_err(env.ours("mesh").args(args)));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("mesh: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Run `mesh` with args and `input` (the secrets) on standard input, and
/// require success.
fn piped(env: &TestEnv, args: &[&str], input: &str) -> std::process::Output {
    let out = with_input(env.ours("mesh").args(args), input);
    assert!(out.status.success(), "mesh {args:?}: {}", stderr(&out));
    out
}

/// Like [`one_line_error`], with `input` on standard input.
fn piped_error(env: &TestEnv, args: &[&str], input: &str) -> String {
    let out = with_input(env.ours("mesh").args(args), input);
    let err = stderr(&out);
    assert!(!out.status.success(), "mesh {args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("mesh: "), "{err}");
    err
}

#[test]
fn udf_commands_reproduce_the_published_examples() {
    let env = TestEnv::new();
    let file = env.home().join("u1.txt");
    fs::write(&file, "UDF Data Value").expect("written");
    let file = file.to_str().expect("utf-8");
    let out = env.mesh(&["udf", "digest", "--content-type", "text/plain", file]);
    assert_eq!(stdout(&out).trim(), "MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF");
    let out = env.mesh(&[
        "udf",
        "digest",
        "--alg",
        "sha3",
        "--content-type",
        "text/plain",
        "--json",
        file,
    ]);
    assert_eq!(json(&out)["udf"], "KCFI-NCQG-DRKG-47R7-OVPT-TCHZ-7UXY");
    let out = env.mesh(&[
        "udf",
        "digest",
        "--bits",
        "200",
        "--content-type",
        "text/plain",
        file,
    ]);
    assert_eq!(
        stdout(&out).trim(),
        "MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF-XI6O-ZSLU-2VOA"
    );
    env.mesh(&[
        "udf",
        "check",
        "--content-type",
        "text/plain",
        file,
        "mddk7n6a727ajznostrx",
    ]);
    let out = run_err(
        env.ours("mesh")
            .args(["udf", "check", file, "MDDK-7N6A-727A-JZNO-STRX"]),
    );
    assert_eq!(stdout(&out).trim(), "MISMATCH", "another content type");

    let mac = env.home().join("u11.txt");
    fs::write(&mac, "Konrad is the traitor").expect("written");
    let out = piped(
        &env,
        &[
            "udf",
            "mac",
            "--key-file",
            "-",
            "--content-type",
            "text/plain",
            mac.to_str().expect("utf-8"),
        ],
        "NDD7-6CMX-H2FW-ISAL-K4VB-DQ3E-PEDM\n",
    );
    assert_eq!(stdout(&out).trim(), "ABGM-G76T-7GPF-FTYH-SB2F-HBDF-SW6B");
    // The key on the command line is refused, and not repeated.
    let err = one_line_error(
        &env,
        &[
            "udf",
            "mac",
            "--key",
            "NDD7-6CMX-H2FW-ISAL-K4VB-DQ3E-PEDM",
            file,
        ],
    );
    assert!(
        err.contains("not taken on the command line") && !err.contains("NDD7"),
        "{err}"
    );

    let nonce = stdout(&env.mesh(&["udf", "nonce"]));
    assert!(
        nonce.starts_with('N') && nonce.trim().len() == 34,
        "{nonce}"
    );
    assert_ne!(nonce, stdout(&env.mesh(&["udf", "nonce"])));

    let err = piped_error(&env, &["udf", "mac", "--key-file", "-", file], "NDD7-1CMX");
    assert!(err.contains("not Base32"), "{err}");
    one_line_error(&env, &["udf", "digest", "--bits", "7", file]);
    one_line_error(&env, &["udf", "digest", "/nonexistent/file"]);
}

#[test]
fn seeds_keys_and_escrow_shares() {
    let env = TestEnv::new();
    let seed = stdout(&env.mesh(&["key", "secret"])).trim().to_owned();
    assert!(seed.starts_with('Z'), "{seed}");
    let derive = |args: &[&str]| {
        let mut all = vec!["key", "derive", "--json"];
        all.extend_from_slice(args);
        json(&piped(&env, &all, &seed))
    };
    let derived = derive(&["CompleteAccountProfile"]);
    assert!(
        derived["public"]
            .as_str()
            .expect("a key")
            .starts_with("ed25519:")
    );
    assert!(
        derived["fingerprint"]
            .as_str()
            .expect("a UDF")
            .starts_with('M')
    );
    let again = derive(&["CompleteAccountProfile"]);
    assert_eq!(derived, again, "derivation is deterministic");
    let enc = derive(&["CompleteAccountEncrypt"]);
    assert!(
        enc["public"]
            .as_str()
            .expect("a key")
            .starts_with("x25519:")
    );
    let x448 = derive(&["CompleteAccountEncrypt", "--alg", "x448"]);
    assert!(x448["public"].as_str().expect("a key").starts_with("x448:"));

    let shares = json(&piped(
        &env,
        &["key", "share", "--shares", "5", "--quorum", "3", "--json"],
        &seed,
    ));
    let shares: Vec<String> = shares["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| s.as_str().expect("a share").to_owned())
        .collect();
    assert_eq!(shares.len(), 5);
    let lines = |shares: &[&str]| shares.join("\n") + "\n";
    let out = piped(
        &env,
        &["key", "recover"],
        &lines(&[&shares[4], &shares[0], &shares[2]]),
    );
    assert_eq!(stdout(&out).trim(), seed);
    let err = piped_error(&env, &["key", "recover"], &lines(&[&shares[0], &shares[1]]));
    assert!(err.contains("3 shares are needed"), "{err}");
    let other = stdout(&piped(
        &env,
        &["key", "share", "--shares", "3", "--quorum", "2"],
        &seed,
    ));
    let other: Vec<&str> = other.lines().collect();
    let err = piped_error(
        &env,
        &["key", "recover"],
        &lines(&[&shares[0], other[0], other[1]]),
    );
    assert!(
        err.contains("same secret"),
        "a share set from two splits: {err}"
    );
    for (shares, quorum) in [("3", "4"), ("16", "2"), ("3", "0")] {
        let err = piped_error(
            &env,
            &["key", "share", "--shares", shares, "--quorum", quorum],
            &seed,
        );
        assert!(err.contains("quorum"), "{err}");
    }
    piped_error(
        &env,
        &["key", "derive", "x"],
        "MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF",
    );
    // Secrets on the command line are refused, and not repeated.
    for args in [
        vec!["key", "derive", &seed, "CompleteAccountProfile"],
        vec!["key", "share", "--shares", "3", "--quorum", "2", &seed],
        vec!["key", "recover", &shares[0], &shares[1], &shares[2]],
    ] {
        let err = one_line_error(&env, &args);
        assert!(
            err.contains("not taken on the command line") && !err.contains(&seed[..8]),
            "{err}"
        );
    }
}

#[test]
fn envelopes_encode_decode_verify() {
    let env = TestEnv::new();
    let public = |seed: &str| {
        json(&piped(&env, &["key", "derive", "", "--json"], seed))["public"]
            .as_str()
            .expect("a key")
            .to_owned()
    };
    // Seeds are kept in files, as they would be, and named by path.
    let seed_file = |name: &str, seed: &str| {
        let path = env.home().join(name);
        fs::write(&path, format!("{seed}\n")).expect("written");
        path.to_str().expect("utf-8").to_owned()
    };
    let reader = stdout(&env.mesh(&["key", "secret", "--kind", "x448"]))
        .trim()
        .to_owned();
    let signer = stdout(&env.mesh(&["key", "secret", "--kind", "ed25519"]))
        .trim()
        .to_owned();
    let stranger = stdout(&env.mesh(&["key", "secret", "--kind", "x448"]))
        .trim()
        .to_owned();
    let (reader_pub, signer_pub) = (public(&reader), public(&signer));
    let (reader, signer, stranger) = (
        seed_file("reader.seed", &reader),
        seed_file("signer.seed", &signer),
        seed_file("stranger.seed", &stranger),
    );
    let plain = env.home().join("plain.txt");
    fs::write(&plain, "the payload").expect("written");
    let sealed = env.home().join("sealed.json");
    let (plain, sealed) = (
        plain.to_str().expect("utf-8"),
        sealed.to_str().expect("utf-8"),
    );
    env.mesh(&[
        "dare",
        "encode",
        plain,
        "-o",
        sealed,
        "--to",
        &reader_pub,
        "--sign-file",
        &signer,
    ]);
    assert!(
        !fs::read_to_string(sealed)
            .expect("written")
            .contains("the payload")
    );
    let out = env.mesh(&[
        "dare",
        "decode",
        sealed,
        "--key-file",
        &reader,
        "--signer",
        &signer_pub,
    ]);
    assert_eq!(stdout(&out), "the payload");
    let out = env.mesh(&["dare", "verify", sealed, "--signer", &signer_pub, "--json"]);
    assert_eq!(json(&out)["valid"], true);
    let reader_seed = fs::read_to_string(&reader).expect("the seed");
    let err = one_line_error(
        &env,
        &["dare", "decode", sealed, "--key", reader_seed.trim()],
    );
    assert!(
        err.contains("not taken on the command line") && err.contains("--key-file"),
        "{err}"
    );

    let err = one_line_error(&env, &["dare", "decode", sealed, "--key-file", &stranger]);
    assert!(err.contains("not encrypted to this key"), "{err}");
    let text = fs::read_to_string(sealed).expect("read");
    let half = env.home().join("half.json");
    fs::write(&half, &text[..text.len() / 2]).expect("written");
    let err = one_line_error(
        &env,
        &[
            "dare",
            "decode",
            half.to_str().expect("utf-8"),
            "--key-file",
            &reader,
        ],
    );
    assert!(err.contains("not a DARE envelope"), "{err}");
    let forged = env.home().join("forged.json");
    fs::write(
        &forged,
        text.replacen("\"signature\":\"", "\"signature\":\"A", 1),
    )
    .expect("written");
    let err = one_line_error(
        &env,
        &[
            "dare",
            "verify",
            forged.to_str().expect("utf-8"),
            "--signer",
            &signer_pub,
        ],
    );
    assert_eq!(err.trim(), "mesh: failed", "no detail for an attacker");
}

#[test]
fn logs_append_list_verify_and_catch_rollback_and_forks() {
    let env = TestEnv::new();
    let log = env.home().join("catalog.dare");
    let log = log.to_str().expect("utf-8");
    let entry = env.home().join("entry");
    let entry = entry.to_str().expect("utf-8");
    let append = |id: &str, event: &str, body: &str| {
        fs::write(entry, body).expect("written");
        json(&env.mesh(&[
            "dare", "log", "append", log, entry, "--id", id, "--event", event, "--json",
        ]))
    };
    append("alpha", "new", "1");
    append("beta", "new", "2");
    let older = fs::read(log).expect("the log");
    let seen = append("alpha", "update", "3");
    append("gamma", "new", "4");
    append("beta", "delete", "");
    let listed = json(&env.mesh(&["dare", "log", "list", log, "--json"]));
    assert_eq!(listed.as_array().expect("rows").len(), 5);
    assert_eq!(listed[4]["event"], "Delete");

    let (size, apex) = (
        seen["size"].to_string(),
        seen["apex"].as_str().expect("apex").to_owned(),
    );
    let verified = json(&env.mesh(&[
        "dare", "log", "verify", log, "--size", &size, "--apex", &apex, "--json",
    ]));
    assert_eq!(
        (verified["size"].as_u64(), verified["live"].as_u64()),
        (Some(5), Some(2))
    );

    // Rolled back: an older log, valid in itself, than the one seen.
    let rolled = env.home().join("rolled.dare");
    fs::write(&rolled, &older).expect("written");
    let rolled = rolled.to_str().expect("utf-8");
    env.mesh(&["dare", "log", "verify", rolled]);
    let err = one_line_error(
        &env,
        &[
            "dare", "log", "verify", rolled, "--size", &size, "--apex", &apex,
        ],
    );
    assert!(err.contains("rolled back"), "{err}");
    // Truncated in the middle of a frame.
    let cut = env.home().join("cut.dare");
    fs::write(&cut, &older[..older.len() - 5]).expect("written");
    let err = one_line_error(
        &env,
        &["dare", "log", "verify", cut.to_str().expect("utf-8")],
    );
    assert!(err.contains("truncated"), "{err}");
    // Forked: history before the seen apex rewritten, then regrown.
    let forked = env.home().join("forked.dare");
    let forked = forked.to_str().expect("utf-8");
    for (id, event, body) in [
        ("alpha", "new", "1"),
        ("beta", "new", "X"),
        ("alpha", "update", "3"),
        ("gamma", "new", "4"),
    ] {
        fs::write(entry, body).expect("written");
        env.mesh(&[
            "dare", "log", "append", forked, entry, "--id", id, "--event", event,
        ]);
    }
    env.mesh(&["dare", "log", "verify", forked]);
    let err = one_line_error(
        &env,
        &[
            "dare", "log", "verify", forked, "--size", &size, "--apex", &apex,
        ],
    );
    assert!(err.contains("history was rewritten"), "{err}");
    // Tampered: one payload byte changed.
    let mut bytes = fs::read(log).expect("the log");
    let at = bytes
        .iter()
        .position(|b| *b == b'4')
        .expect("the gamma payload");
    bytes[at] = b'5';
    fs::write(log, &bytes).expect("written");
    let err = one_line_error(&env, &["dare", "log", "verify", log]);
    assert!(err.contains("does not verify"), "{err}");
    let err = one_line_error(
        &env,
        &["dare", "log", "append", log, entry, "--id", "delta"],
    );
    assert!(
        err.contains("does not verify"),
        "appending to a bad log is refused: {err}"
    );
}
