//! Account figures with the real binaries on loopback:
//! `cargo build --workspace --bins && cargo bench -p mesh-e2e --bench account`.
//!
//! Prints the time from `mesh device accept` until the new device serves
//! the account, the initial sync of a 10,000-entry catalog, and the cost
//! of incremental syncs of 1, 10 and 100 new entries on top of it (a cost
//! in proportion to the change, not to the catalog, shows as a flat
//! per-entry figure). No assertion: this machine is shared and noisy.

use std::time::{Duration, Instant};

use mesh_e2e::{MeshService, TestEnv, wait_until};

const CATALOG: usize = 10_000;

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn import(env: &TestEnv, first: usize, count: usize) {
    let map: serde_json::Map<String, serde_json::Value> = (first..first + count)
        .map(|i| {
            (
                format!("entry-{i:06}"),
                serde_json::Value::String(format!("value {i}")),
            )
        })
        .collect();
    let file = env.home().join("import.json");
    std::fs::write(&file, serde_json::Value::Object(map).to_string()).expect("written");
    env.mesh(&[
        "catalog",
        "import",
        "application",
        file.to_str().expect("utf-8"),
    ]);
}

fn main() {
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let tablet = TestEnv::device(&service);
    tablet.mesh(&["account", "create", "alice@example.com", "--name", "tablet"]);

    // 1. From `mesh device accept` until the laptop serves the account.
    let laptop = TestEnv::device(&service);
    let asked = laptop.mesh_json(&[
        "device",
        "connect",
        "alice@example.com",
        "--name",
        "laptop",
        "--no-wait",
    ]);
    let code = asked["witness"].as_str().expect("a code").to_owned();
    wait_until("the request arrives", || {
        tablet
            .mesh_json(&["device", "pending"])
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    let accept = timed(|| {
        tablet.mesh(&["device", "accept", &code]);
        wait_until("the laptop serves the account", || {
            laptop.mesh_json(&["account", "status"])["status"] == "connected"
                && laptop
                    .ours("mesh")
                    .args(["catalog", "list", "application"])
                    .output()
                    .is_ok_and(|o| o.status.success())
        });
    });
    println!(
        "accept -> the new device serves the account: {:.0} ms (target < 1000 ms)",
        ms(accept)
    );

    // 2. Initial sync of a 10,000-entry catalog on a device that joins.
    let fill = timed(|| import(&tablet, 0, CATALOG));
    println!(
        "writing {CATALOG} entries through the service: {:.1} s",
        fill.as_secs_f64()
    );
    let phone = TestEnv::with(&[
        ("MESH_SERVICE", &service.url()),
        ("MESH_SYNC_INTERVAL_MS", "3600000"),
    ]);
    let asked = phone.mesh_json(&[
        "device",
        "connect",
        "alice@example.com",
        "--name",
        "phone",
        "--no-wait",
    ]);
    let code = asked["witness"].as_str().expect("a code").to_owned();
    wait_until("the request arrives", || {
        tablet
            .mesh_json(&["device", "pending"])
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    tablet.mesh(&["device", "accept", &code]);
    let initial = timed(|| {
        // The first sync completes the connection, then syncs everything.
        phone
            .ours("mesh")
            .args(["account", "sync"])
            .output()
            .expect("runs");
        wait_until("the phone has the whole catalog", || {
            phone.mesh_json(&["account", "status"])["stores"]["MMM_Application"].as_u64()
                == Some(CATALOG as u64)
        });
    });
    println!(
        "initial sync of {CATALOG} entries: {:.2} s ({:.0} us per entry)",
        initial.as_secs_f64(),
        initial.as_secs_f64() * 1e6 / CATALOG as f64
    );

    // 3. Incremental syncs: cost per new entry, on top of 10,000.
    let mut next = CATALOG;
    println!("incremental sync on top of {CATALOG} entries:");
    for change in [1usize, 10, 100] {
        import(&tablet, next, change);
        next += change;
        let t = timed(|| {
            phone.mesh(&["account", "sync"]);
        });
        println!(
            "  {change:>4} new entries: {:>7.1} ms ({:.2} ms per entry)",
            ms(t),
            ms(t) / change as f64
        );
    }
    let idle = timed(|| {
        phone.mesh(&["account", "sync"]);
    });
    println!(
        "     0 new entries: {:>7.1} ms (one Status round trip)",
        ms(idle)
    );
}
