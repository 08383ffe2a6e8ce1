//! Supervised worker threads for CPU-heavy runs (training, evaluation): a
//! panic in one ends that run with an error its owner hears of, instead of
//! leaving the owner waiting forever; the next run starts as usual.
//!
//! `PP_FAULT_PANIC_ONCE=<name>[,<name>...]` makes the first run of each
//! named worker panic (fault injection, for tests of exactly that).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// How throughput work runs beside requests (`ingest.background`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Background {
    /// The idle scheduling class (Linux `SCHED_IDLE`, and nice +10): a
    /// request thread that wakes preempts it at once. Throughput work then
    /// gets almost no CPU while any thread of the same scheduling group at
    /// nice 0 is busy (a flood of requests, or another process of the same
    /// session or cgroup).
    #[default]
    Idle,
    /// Nice +10 only: requests still go first, each after the running
    /// slice (a longer tail), and throughput work keeps a share of the CPU
    /// beside busy nice-0 neighbours.
    Nice,
}

static BACKGROUND: AtomicU8 = AtomicU8::new(0);

/// Sets the class [`background_priority`] puts threads in from now on
/// (the daemon does, from its config, before it starts a thread).
pub fn set_background(class: Background) {
    BACKGROUND.store(class as u8, Ordering::Relaxed);
}

/// Puts the calling thread in the background, in the class set by
/// [`set_background`]. Throughput work (ingest's stages and clients, the
/// compactors, the fold-in's solves, training) then gives way to a thread
/// that answers a request, and has all the cores when nothing else runs.
/// Among themselves these threads keep their shares. Threads the caller
/// starts later inherit the class.
pub fn background_priority() {
    let class = if BACKGROUND.load(Ordering::Relaxed) == Background::Nice as u8 {
        Background::Nice
    } else {
        Background::Idle
    };
    lower_priority(class);
}

/// Puts the calling thread in `class` (nice +10, and `SCHED_IDLE` for [`Background::Idle`]).
pub fn lower_priority(class: Background) {
    #[cfg(target_os = "linux")]
    // SAFETY: system calls on the calling thread's own id with a parameter
    // that lives across the call. A failure leaves the class as it was (the
    // nice value still applies).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
        if class == Background::Idle {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = class;
}

/// (scheduling policy, nice value) of the calling thread.
#[cfg(target_os = "linux")]
fn class_now() -> (i32, i32) {
    // SAFETY: queries of the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        (
            libc::sched_getscheduler(tid),
            libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
        )
    }
}

/// The scheduler slice a request thread asks for: 100 µs, the shortest the
/// kernel takes.
pub const REQUEST_SLICE_NS: u64 = 100_000;

/// Asks the scheduler for a short slice for the calling thread (Linux ≥ 6.12,
/// EEVDF: `sched_attr.sched_runtime` in the normal class, no privilege
/// needed). A request thread that wakes then preempts a normal-class thread
/// that runs a longer slice (1.4 ms by default on 2 cores: sled's, the
/// fold-in's, the load generator's), instead of waiting it out; its own runs
/// are short anyway. The policy and nice value stay as they are. False where
/// the kernel refuses (older kernels treat the value as a hint and ignore it).
pub fn request_priority() -> bool {
    #[cfg(target_os = "linux")]
    {
        /// `struct sched_attr` (include/uapi/linux/sched/types.h).
        #[repr(C)]
        struct SchedAttr {
            size: u32,
            policy: u32,
            flags: u64,
            nice: i32,
            priority: u32,
            runtime: u64,
            deadline: u64,
            period: u64,
            util_min: u32,
            util_max: u32,
        }
        let (policy, nice) = class_now();
        if policy != libc::SCHED_OTHER {
            return false;
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            nice,
            priority: 0,
            runtime: REQUEST_SLICE_NS,
            deadline: 0,
            period: 0,
            util_min: 0,
            util_max: 0,
        };
        // SAFETY: a system call on the calling thread (id 0) with an
        // attribute that lives across the call and names its size.
        unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// The CPU time the calling thread has used, in nanoseconds (0 where the
/// clock cannot be read): what a piece of work cost, apart from the time it
/// waited for a core.
pub fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct it is given, which lives across the call.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    if !ok {
        return 0;
    }
    (t.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec.max(0) as u64)
}

/// Runs `f` on the calling thread; answers what it made and the CPU time it
/// took ([`thread_cpu_ns`]).
pub fn with_cpu<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = thread_cpu_ns();
    let made = f();
    (made, thread_cpu_ns().saturating_sub(before))
}

/// Runs `f` on a thread of its own at background priority and answers what
/// it made: threads a library starts inside `f` (librdkafka's client and
/// broker threads) inherit the priority. A panic in `f` is raised again here.
pub fn in_background<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        match s
            .spawn(|| {
                background_priority();
                f()
            })
            .join()
        {
            Ok(t) => t,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// Makes rayon's global pool (training's and evaluation's parallel loops)
/// run at background priority, when it has not started yet.
pub fn background_rayon() {
    let built = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("compute-{i}"))
        .start_handler(|_| background_priority())
        .build_global();
    if let Err(e) = built {
        tracing::debug!("rayon's global pool was already running: {e}");
    }
}

/// What a panic carried, as text.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

static INJECTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether this run of `name` is to panic (the first one, when asked for).
pub fn inject(name: &str) -> bool {
    let Ok(want) = std::env::var("PP_FAULT_PANIC_ONCE") else {
        return false;
    };
    if !want.split(',').any(|w| w.trim() == name) {
        return false;
    }
    let mut done = INJECTED.lock().unwrap_or_else(|p| p.into_inner());
    if done.iter().any(|d| d == name) {
        return false;
    }
    done.push(name.to_string());
    true
}

/// Runs `work` on a thread of its own named `name`, at background priority
/// (training and evaluation are throughput work); if it panics (or the thread
/// cannot start), `failed` gets the reason.
pub fn spawn<W, F>(name: &str, work: W, failed: F)
where
    W: FnOnce() + Send + 'static,
    F: FnOnce(String) + Send + 'static,
{
    let failed = Arc::new(Mutex::new(Some(failed)));
    let on_fail = failed.clone();
    let label = name.to_string();
    let started = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            background_priority();
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if inject(&label) {
                    panic!("injected fault (PP_FAULT_PANIC_ONCE={label})");
                }
                work()
            }));
            if let Err(p) = run {
                let why = format!("the {label} run failed: {}", panic_message(p.as_ref()));
                tracing::error!("{why}; the next run starts as usual");
                if let Some(f) = on_fail.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    f(why);
                }
            }
        });
    if let Err(e) = started {
        let why = format!("cannot start the {name} thread: {e}");
        tracing::error!("{why}");
        if let Some(f) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            f(why);
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    use super::class_now;

    #[cfg(target_os = "linux")]
    #[test]
    fn each_background_class_lowers_a_thread_as_it_says() {
        use super::{lower_priority, Background};
        let on_thread = |class: Background| {
            std::thread::spawn(move || {
                let before = class_now();
                lower_priority(class);
                (before, class_now())
            })
            .join()
            .unwrap()
        };
        let (before, idle) = on_thread(Background::Idle);
        assert_eq!(before.0, libc::SCHED_OTHER);
        assert_eq!(idle, (libc::SCHED_IDLE, 10));
        let (_, nice) = on_thread(Background::Nice);
        assert_eq!(nice, (libc::SCHED_OTHER, 10));
        // The config names them as the docs do.
        let parsed: Vec<Background> = ["\"idle\"", "\"nice\""]
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(parsed, [Background::Idle, Background::Nice]);
    }

    /// The calling thread's scheduler slice, where the kernel shows it.
    #[cfg(target_os = "linux")]
    fn slice_now() -> Option<u64> {
        // SAFETY: the calling thread's own id.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let sched = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).ok()?;
        sched
            .lines()
            .find(|l| l.starts_with("se.slice"))?
            .split(':')
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_request_thread_gets_a_short_slice_and_keeps_its_class() {
        let (set, before, after, class) = std::thread::spawn(|| {
            let before = slice_now();
            let set = super::request_priority();
            (set, before, slice_now(), class_now())
        })
        .join()
        .unwrap();
        assert_eq!(class, (libc::SCHED_OTHER, 0));
        // Kernels from 6.12 on take a thread's own slice.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        if (major, minor) >= (6, 12) {
            assert!(before.is_some(), "no se.slice in the thread's sched file");
            assert!(set);
            assert_eq!(after, Some(super::REQUEST_SLICE_NS));
        }
        // A background thread is left as it is.
        let set = std::thread::spawn(|| {
            super::lower_priority(super::Background::Idle);
            super::request_priority()
        })
        .join()
        .unwrap();
        assert!(!set);
    }

    #[test]
    fn a_panic_reaches_the_owner_and_the_next_run_works() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        super::spawn(
            "unit-worker",
            || panic!("boom {}", 42),
            move |why| tx2.send(Err(why)).unwrap(),
        );
        let got: Result<(), String> = rx.recv().unwrap();
        assert_eq!(got, Err("the unit-worker run failed: boom 42".into()));
        super::spawn("unit-worker", move || tx.send(Ok(())).unwrap(), |_| {});
        assert_eq!(rx.recv().unwrap(), Ok(()));
    }
}
