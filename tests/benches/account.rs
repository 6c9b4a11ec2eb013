//! Account figures with the real binaries on loopback:
//! `cargo build --workspace --bins && cargo bench -p mesh-e2e --bench account`.
//!
//! Prints the time from `mesh device accept` until the new device serves
//! the account, the initial sync of a 10,000-entry catalog, and the cost
//! of incremental syncs of 1, 10 and 100 new entries on top of it (a cost
//! in proportion to the change, not to the catalog, shows as a flat
//! per-entry figure). No assertion: this machine is shared and noisy.

use std::time::{Duration, Instant};

use mesh_e2e::{MeshService, TestEnv, approve, wait_until};

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

    // A watcher joins now and syncs only when told to.
    let watcher = TestEnv::with(&[
        ("MESH_SERVICE", &service.url()),
        ("MESH_SYNC_INTERVAL_MS", "3600000"),
    ]);
    approve(&tablet, &watcher, "watcher", "device");
    watcher.mesh(&["account", "sync"]);

    // 2. Incremental syncs at 1,000 entries, then fill to 10,000.
    import(&tablet, 0, 1_000);
    watcher.mesh(&["account", "sync"]);
    let small = incremental(&tablet, &watcher, 1_000);
    let fill = timed(|| import(&tablet, 1_000, CATALOG - 1_000));
    println!(
        "writing {} more entries through the service: {:.1} s ({:.1} ms per entry)",
        CATALOG - 1_000,
        fill.as_secs_f64(),
        ms(fill) / (CATALOG - 1_000) as f64
    );
    let catch_up = timed(|| {
        watcher.mesh(&["account", "sync"]);
    });
    println!(
        "the watcher catching up on {} entries: {:.2} s",
        CATALOG - 1_000,
        catch_up.as_secs_f64()
    );
    let large = incremental(&tablet, &watcher, CATALOG + 111);
    println!("incremental sync, by change and by catalog size (ms):");
    println!(
        "{:>12} {:>14} {:>15}",
        "new entries", "1,000 entries", "10,000 entries"
    );
    for ((change, a), (_, b)) in small.iter().zip(&large) {
        println!("{change:>12} {a:>14.1} {b:>15.1}");
    }

    // 3. Initial sync of the 10,000-entry catalog on a device that joins.
    let phone = TestEnv::with(&[
        ("MESH_SERVICE", &service.url()),
        ("MESH_SYNC_INTERVAL_MS", "3600000"),
    ]);
    approve(&tablet, &phone, "phone", "device");
    let initial = timed(|| {
        phone.mesh(&["account", "sync"]);
    });
    let count = phone.mesh_json(&["account", "status"])["stores"]["MMM_Application"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "initial sync of {count} entries on a new device: {:.2} s ({:.0} us per entry)",
        initial.as_secs_f64(),
        initial.as_secs_f64() * 1e6 / count.max(1) as f64
    );
}

/// Time `mesh account sync` on `watcher` after 0, 1, 10 and 100 new entries.
fn incremental(tablet: &TestEnv, watcher: &TestEnv, first: usize) -> Vec<(usize, f64)> {
    let mut next = first;
    let mut out = Vec::new();
    for change in [0usize, 1, 10, 100] {
        if change > 0 {
            import(tablet, next, change);
            next += change;
        }
        let t = timed(|| {
            watcher.mesh(&["account", "sync"]);
        });
        out.push((change, ms(t)));
    }
    out
}
