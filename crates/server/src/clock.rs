//! The wall clock: what outlives the process (message records, `x-death`
//! times, a delayed message's due time) is stamped with it, in
//! milliseconds since the Unix epoch. Deadlines within a run use tokio's
//! monotonic clock instead.

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
