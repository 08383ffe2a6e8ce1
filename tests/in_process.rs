//! The daemon run inside a caller's process (as the benchmarks and library
//! users run it): after `shutdown` every handle on the store is gone, so the
//! same process opens the store again and finds every record exactly once.

use playpulse::runtime::bench::{ingest, IngestBenchArgs};

#[test]
fn a_daemon_shut_down_in_process_releases_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let args = IngestBenchArgs {
        events: 20_000,
        bad_fraction: 0.01,
        seed: 11,
        users: 500,
        videos: 100,
        partitions: 4,
        batch_size: 2_000,
        cache_mb: 16,
        pair_compaction_deltas: 10_000,
        step_ms: 50,
        // Small enough that the store rewrites itself during the run.
        rewrite_ratio: 1.5,
        rewrite_min_mb: 1,
    };
    // `ingest` shuts the daemon down, then opens the store itself to check it.
    let r = ingest(&args, dir.path()).expect("the store opens again after shutdown");
    assert_eq!(r.stored + r.rejected, 20_000, "{r:?}");
    assert_eq!(
        (r.lost, r.duplicated, r.rejected_reason_mismatch),
        (0, 0, 0),
        "{r:?}"
    );
    assert!(r.rejected > 0, "{r:?}");
    // The store rewrote itself while ingesting (every record was still found
    // once, above), and only the generation it serves from is left.
    let (generation, current) = playpulse::store::generation::current(dir.path()).unwrap();
    assert!(generation >= 1, "no rewrite during the run");
    let mut stores: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| playpulse::store::generation::number(n).is_some())
        .collect();
    stores.sort();
    assert_eq!(stores, [current.file_name().unwrap().to_str().unwrap()]);
    // And once more, with nothing of the first run holding it.
    playpulse::store::Store::open(dir.path(), 16).expect("no handle on the store is left");
}
