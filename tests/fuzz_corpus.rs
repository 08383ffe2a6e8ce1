//! The fuzz targets' seeds and every input a fuzzer once broke on, replayed on
//! stable Rust through the same functions (`playpulse::ingest::fuzz`, `playpulse::admin::fuzz`). A seed named
//! `ok_*` must be accepted, `bad_*` refused; files under `fuzz/regressions`
//! reproduce fixed crashes and only have to pass the invariants.

use std::path::Path;

/// Runs the target named `name` on `data`; answers whether the input was
/// accepted (`None`: no such target).
fn run(name: &str, data: &[u8]) -> Option<bool> {
    use playpulse::{admin, ingest};
    Some(match name {
        "json" => ingest::fuzz::json(data),
        "legacy" => ingest::fuzz::legacy(data),
        "csv" => ingest::fuzz::csv(data),
        "admin" => admin::fuzz::request(data),
        _ => return None,
    })
}

fn replay(dir: &Path, expect_by_name: bool) -> usize {
    let mut n = 0;
    let Ok(targets) = std::fs::read_dir(dir) else {
        return 0;
    };
    for target in targets {
        let target = target.expect("readable corpus dir");
        let name = target.file_name().to_string_lossy().to_string();
        for file in std::fs::read_dir(target.path()).expect("readable target dir") {
            let file = file.expect("readable corpus entry");
            let data = std::fs::read(file.path()).expect("readable corpus file");
            let accepted = run(&name, &data)
                .unwrap_or_else(|| panic!("{}: no fuzz target {name:?}", dir.display()));
            let fname = file.file_name().to_string_lossy().to_string();
            if expect_by_name {
                let want = fname.starts_with("ok_");
                assert!(
                    want || fname.starts_with("bad_"),
                    "seed {name}/{fname}: name it ok_* or bad_*"
                );
                assert_eq!(accepted, want, "seed {name}/{fname}");
            }
            n += 1;
        }
    }
    n
}

#[test]
fn seeds_and_regressions_hold_the_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = replay(&root.join("seeds"), true);
    assert!(seeds >= 30, "only {seeds} seeds found under fuzz/seeds");
    replay(&root.join("regressions"), false);
}
