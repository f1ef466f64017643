//! Memory and disk alarms, as RabbitMQ's `vm_memory_high_watermark` and
//! `disk_free_limit`.
//!
//! A thread of its own (`warren-alarms`) samples the broker's resident
//! memory every 50 ms and the data directory's free space every second (a
//! read of `/proc/self/statm` and a `statvfs`, kept off the async threads)
//! and publishes the state on a watch channel. A flood grows memory by a few
//! hundred MB/s at most here, so the alarm trips within a few percent of
//! the watermark (sampled every 0.5 s it overshot a 500 MiB watermark by
//! 25 %). Connections read it: while an alarm is on, a connection
//! that receives a basic.publish holds that frame, sends
//! `connection.blocked` to a client that announced the capability, and stops
//! reading its socket until the alarm clears, as RabbitMQ does. Consumers
//! keep being served, so that memory can drain. Changes are logged.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// How often memory is sampled (and at once after a setting changes).
const INTERVAL: Duration = Duration::from_millis(50);
/// Freed memory is handed back to the system every this many memory
/// samples (2 s), and at every sample while the memory alarm is on.
const COLLECT_EVERY: u32 = 40;
/// Free disk and the machine's memory are read every this many memory
/// samples (1 s).
const DISK_EVERY: u32 = 20;

/// Where the memory limit comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Watermark {
    /// A fraction of the machine's memory, or of the cgroup's limit when
    /// that is lower (RabbitMQ's `vm_memory_high_watermark.relative`).
    Relative(f64),
    /// Octets (`vm_memory_high_watermark.absolute`).
    Absolute(u64),
}

impl FromStr for Watermark {
    type Err = String;

    /// `0.4` is relative; a size with a unit (`512MiB`, `2GB`) or a whole
    /// number of octets above 1 is absolute.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(fraction) = s.parse::<f64>() {
            if s.contains('.') || fraction <= 1.0 {
                return if fraction > 0.0 && fraction <= 1.0 {
                    Ok(Watermark::Relative(fraction))
                } else {
                    Err(format!("a relative watermark is a fraction in (0, 1]: {s}"))
                };
            }
        }
        parse_size(s).map(Watermark::Absolute)
    }
}

/// A paging ratio: a fraction of the memory limit, 0 or more (above 1,
/// queues never page; RabbitMQ takes the same range).
pub fn parse_paging_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("a paging ratio is a number, 0 or more: {s}")),
    }
}

/// Octets from `50MB`, `512MiB`, `2GB`, `1000000` (RabbitMQ's units:
/// kB, MB, GB are powers of 1000; KiB, MiB, GiB of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: u64 = number.parse().map_err(|_| format!("not a size: {s}"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s} (use kB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    number.checked_mul(scale).ok_or_else(|| format!("too large: {s}"))
}

/// Which alarm blocks publishers; None when publishing is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alarm {
    /// Memory above the watermark.
    Memory,
    /// Free disk below the limit.
    Disk,
}

impl Alarm {
    /// The reason in `connection.blocked`, RabbitMQ's words.
    pub fn reason(self) -> &'static str {
        match self {
            Alarm::Memory => "low on memory",
            Alarm::Disk => "low on disk space",
        }
    }
}

/// What the monitor last saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Status {
    /// The broker's resident memory, in octets.
    pub memory_used: u64,
    /// The memory limit the watermark gives, in octets.
    pub memory_limit: u64,
    /// Whether the memory alarm is on.
    pub memory_alarm: bool,
    /// Free space where the data directory is, in octets.
    pub disk_free: u64,
    /// The free-disk limit, in octets.
    pub disk_free_limit: u64,
    /// Whether the disk alarm is on.
    pub disk_alarm: bool,
}

#[derive(Debug)]
struct Settings {
    watermark: Watermark,
    disk_free_limit: u64,
    paging_ratio: f64,
}

/// The alarms of one broker: settings, the last status, and the state
/// connections watch.
#[derive(Debug)]
pub struct Alarms {
    settings: Mutex<Settings>,
    status: Mutex<Status>,
    state: watch::Sender<Option<Alarm>>,
    monitor: Mutex<Option<std::thread::Thread>>,
    /// Memory above `paging_ratio` of the limit: queues page transient
    /// bodies past their in-memory head out to the store.
    pressure: Arc<AtomicBool>,
    /// A setting changed: the monitor samples everything at once.
    woken: Mutex<bool>,
}

impl Alarms {
    /// Starts the monitor thread for the data directory `dir`. It stops once
    /// the returned value is dropped.
    pub fn start(watermark: Watermark, disk_free_limit: u64, paging_ratio: f64, dir: PathBuf) -> Arc<Self> {
        let alarms = Arc::new(Self {
            settings: Mutex::new(Settings {
                watermark,
                disk_free_limit,
                paging_ratio,
            }),
            pressure: Arc::new(AtomicBool::new(false)),
            status: Mutex::new(Status::default()),
            state: watch::channel(None).0,
            monitor: Mutex::new(None),
            woken: Mutex::new(false),
        });
        // The first sample before anyone connects. The machine's memory and
        // the free disk are read once a second; the broker's own memory at
        // every sample.
        let mut slow = (total_memory(), free_disk(&dir));
        alarms.sample(slow, true);
        let weak = Arc::downgrade(&alarms);
        let thread = std::thread::Builder::new()
            .name("warren-alarms".into())
            .spawn(move || {
                let mut round = 0u32;
                while let Some(alarms) = weak.upgrade() {
                    round = round.wrapping_add(1);
                    // A woken thread (a setting changed) looks at both.
                    let full = round.is_multiple_of(DISK_EVERY) || alarms.woken();
                    if full {
                        slow = (total_memory(), free_disk(&dir));
                    }
                    alarms.sample(slow, full);
                    drop(alarms);
                    if round.is_multiple_of(COLLECT_EVERY) {
                        return_freed_memory();
                    }
                    std::thread::park_timeout(INTERVAL);
                }
            });
        match thread {
            Ok(handle) => *lock(&alarms.monitor) = Some(handle.thread().clone()),
            Err(e) => warn!(error = %e, "cannot start the alarm monitor: no memory or disk alarm"),
        }
        alarms
    }

    /// The alarm state, for connections to watch.
    pub fn watch(&self) -> watch::Receiver<Option<Alarm>> {
        self.state.subscribe()
    }

    /// Set while memory is above the paging ratio of the limit (RabbitMQ's
    /// `vm_memory_high_watermark_paging_ratio`): queues read it to decide
    /// whether to page transient bodies out.
    pub fn memory_pressure(&self) -> Arc<AtomicBool> {
        self.pressure.clone()
    }

    /// What the monitor last saw.
    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    /// Changes the memory watermark at run time (as `rabbitmqctl
    /// set_vm_memory_high_watermark`); it is applied within a moment.
    pub fn set_memory_high_watermark(&self, watermark: Watermark) {
        lock(&self.settings).watermark = watermark;
        self.wake();
    }

    /// Changes the free-disk limit at run time.
    pub fn set_disk_free_limit(&self, octets: u64) {
        lock(&self.settings).disk_free_limit = octets;
        self.wake();
    }

    fn wake(&self) {
        *lock(&self.woken) = true;
        if let Some(thread) = &*lock(&self.monitor) {
            thread.unpark();
        }
    }

    /// Whether a setting changed since the last call.
    fn woken(&self) -> bool {
        std::mem::take(&mut *lock(&self.woken))
    }

    /// `slow`: the machine's (or cgroup's) memory and the free disk, as
    /// last read.
    /// One sample. A memory alarm is set at any sample, but cleared only at
    /// a `full` one (once a second, as RabbitMQ checks its memory): a broker
    /// hovering at its watermark while it pages would otherwise block and
    /// unblock its publishers twenty times a second (460 times in a 20 s
    /// flood), each time telling every client and writing to the log.
    fn sample(&self, (total, disk_free): (Option<u64>, Option<u64>), full: bool) {
        let (watermark, disk_free_limit, paging_ratio) = {
            let s = lock(&self.settings);
            (s.watermark, s.disk_free_limit, s.paging_ratio)
        };
        if lock(&self.status).memory_alarm {
            return_freed_memory();
        }
        let memory_used = resident_memory().unwrap_or(0);
        let memory_limit = match watermark {
            Watermark::Absolute(octets) => octets,
            Watermark::Relative(f) => (total.unwrap_or(u64::MAX) as f64 * f) as u64,
        };
        let disk_free = disk_free.unwrap_or(u64::MAX);
        self.pressure.store(
            memory_used as f64 >= memory_limit as f64 * paging_ratio,
            Ordering::Relaxed,
        );
        let was = lock(&self.status).memory_alarm;
        let new = Status {
            memory_used,
            memory_limit,
            memory_alarm: memory_used > memory_limit || (was && !full),
            disk_free,
            disk_free_limit,
            disk_alarm: disk_free < disk_free_limit,
        };
        let old = std::mem::replace(&mut *lock(&self.status), new);
        if new.memory_alarm != old.memory_alarm {
            if new.memory_alarm {
                warn!(
                    used = memory_used,
                    limit = memory_limit,
                    "memory alarm set: publishers are blocked"
                );
            } else {
                info!(used = memory_used, limit = memory_limit, "memory alarm cleared");
            }
        }
        if new.disk_alarm != old.disk_alarm {
            if new.disk_alarm {
                warn!(
                    free = disk_free,
                    limit = disk_free_limit,
                    "disk alarm set: publishers are blocked"
                );
            } else {
                info!(free = disk_free, limit = disk_free_limit, "disk alarm cleared");
            }
        }
        let alarm = if new.memory_alarm {
            Some(Alarm::Memory)
        } else if new.disk_alarm {
            Some(Alarm::Disk)
        } else {
            None
        };
        self.state
            .send_if_modified(|state| std::mem::replace(state, alarm) != alarm);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Has the allocator give freed memory back to the system now. mimalloc
/// returns it lazily, when a thread allocates or frees again: a broker
/// whose queue was purged while its publishers were blocked does neither,
/// and kept 547 MB resident with no message left, so the alarm never
/// cleared; an idle broker after a 10M backlog drained kept 1 GB. This
/// thread forces the collection (which also purges the arenas other
/// threads freed into) every 2 s, and at every sample during an alarm. The binary's allocator is mimalloc; in a
/// process with another allocator this does nothing useful, and no harm.
fn return_freed_memory() {
    // SAFETY: mi_collect takes no pointer and may be called from any thread
    // at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// This process's resident set, from `/proc/self/statm`.
fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The machine's memory, or the cgroup's limit when lower (in a container,
/// the limit is what the kernel enforces).
fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let machine = kib * 1024;
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok());
    Some(cgroup.map_or(machine, |limit| limit.min(machine)))
}

/// Free space available to the broker where `dir` is.
fn free_disk(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the struct it is given; the path is a
    // NUL-terminated string that outlives the call.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        stat
    };
    #[allow(clippy::useless_conversion)] // u32 on some targets
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_and_sizes_parse_as_rabbitmq_writes_them() {
        assert_eq!("0.4".parse(), Ok(Watermark::Relative(0.4)));
        assert_eq!("1".parse(), Ok(Watermark::Relative(1.0)));
        assert_eq!("2GB".parse(), Ok(Watermark::Absolute(2_000_000_000)));
        assert_eq!("512MiB".parse(), Ok(Watermark::Absolute(512 << 20)));
        assert_eq!("1000000".parse(), Ok(Watermark::Absolute(1_000_000)));
        assert!("1.5".parse::<Watermark>().is_err());
        assert!("0".parse::<Watermark>().is_err());
        assert!("12XB".parse::<Watermark>().is_err());
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("1kB"), Ok(1000));
        assert!(parse_size("").is_err());
        assert_eq!(parse_paging_ratio("0.5"), Ok(0.5));
        for bad in ["-0.1", "NaN", "inf", "half"] {
            assert!(parse_paging_ratio(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_monitor_sees_this_process_and_its_disk() {
        let dir = tempfile::tempdir().unwrap();
        let alarms = Alarms::start(Watermark::Relative(0.4), 0, 0.5, dir.path().to_owned());
        let s = alarms.status();
        assert!(s.memory_used > 0 && s.memory_limit > s.memory_used, "{s:?}");
        assert!(s.disk_free > 0 && !s.disk_alarm, "{s:?}");
        assert_eq!(*alarms.watch().borrow(), None);
    }
}
