//! Replays the corpus kept in `fuzz/corpus/<target>/` through each target:
//! fast and deterministic, it is not a fuzz run, but it keeps every input the
//! fuzzer found interesting (and every past finding) passing.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        count += 1;
    }
    assert!(count > 0, "no corpus for {target}");
}

#[test]
fn frame_decoding() {
    replay("frame_decoding", warren_fuzz::frame_decoding);
}

#[test]
fn content_assembly() {
    replay("content_assembly", warren_fuzz::content_assembly);
}

#[test]
fn field_table() {
    replay("field_table", warren_fuzz::field_table);
}

#[test]
fn fast_decoding() {
    replay("fast_decoding", warren_fuzz::fast_decoding);
}

#[test]
fn connection() {
    replay("connection", warren_fuzz::connection);
}

#[test]
fn store_recovery() {
    replay("store_recovery", warren_fuzz::store_recovery);
}
