//! The proxy under test as a separate process, and what the benchmark reads about it from
//! the OS: CPU time (user + system) and resident memory, plus the machine description and
//! the open-files limit the 1000-stream phase needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `llm-rotator serve`.
pub struct Proxy {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The time from spawning to the first 200 on `/health`.
    pub startup: Duration,
}

/// The address in a ready file (`http://127.0.0.1:PORT`), once it is there.
fn reported_addr(ready: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(ready).ok()?;
    text.trim().strip_prefix("http://")?.parse().ok()
}

impl Proxy {
    /// Starts `exe serve` with this config in `dir` on a port it picks (`--port 0`, read
    /// from its ready file), and waits for `/health` to answer 200.
    pub fn start(exe: &Path, dir: &Path, config: &str) -> Result<Proxy, String> {
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config).map_err(|e| format!("write config: {e}"))?;
        let log = std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
        // An earlier start killed in this dir left its address behind.
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--port")
            .arg("0")
            .arg("--ready-file")
            .arg(&ready)
            .env_remove("RUST_LOG")
            .env("BENCH_KEY", "sk-bench-0000000000000000000000000000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", exe.display()))?;
        let deadline = started + Duration::from_secs(20);
        let mut addr = None;
        loop {
            if addr.is_none() {
                addr = reported_addr(&ready);
            }
            if let Some(addr) = addr.filter(|a| health_ok(*a)) {
                return Ok(Proxy {
                    child,
                    addr,
                    startup: started.elapsed(),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                return Err(format!("llm-rotator exited early ({status}): {err}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("llm-rotator did not answer /health within 20 s".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET path` answers with a body that contains `needle`.
pub fn get_contains(addr: SocketAddr, path: &str, needle: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut text).is_ok()
        && text.contains(needle)
}

fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// CPU time (user + system, all threads, including finished ones) of `pid`, if readable.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command (which may contain spaces) start at field 3 (state).
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_secs_f64(
            ticks as f64 / clock_ticks()? as f64,
        ))
    }
    #[cfg(not(target_os = "linux"))]
    {
        // `ps -o time=`: [[dd-]hh:]mm:ss.cc
        let out = Command::new("ps")
            .args(["-o", "time=", "-p", &pid.to_string()])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut secs = 0f64;
        for part in text.split(['-', ':']) {
            secs = secs * 60.0 + part.parse::<f64>().ok()?;
        }
        Some(Duration::from_secs_f64(secs))
    }
}

/// CPU time of this process's threads named `name` (Linux; `None` elsewhere): the mock
/// provider's runtime, as a yardstick for what one bare hyper hop costs.
pub fn own_threads_cpu(name: &str) -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let mut ticks = 0u64;
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            if head.split_once('(').map(|(_, comm)| comm) != Some(name) {
                continue;
            }
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            ticks += t(11) + t(12);
        }
        Some(Duration::from_secs_f64(
            ticks as f64 / clock_ticks()? as f64,
        ))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        None
    }
}

#[cfg(target_os = "linux")]
fn clock_ticks() -> Option<u64> {
    static TICKS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })
}

/// Context switches (voluntary and not) of `pid`'s live threads (Linux; `None` elsewhere):
/// each is a thread parking and being woken, which on a busy 2-core machine costs more
/// than most of the request's own work.
pub fn context_switches(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut n = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            for line in status.lines() {
                if line.starts_with("voluntary_ctxt_switches:")
                    || line.starts_with("nonvoluntary_ctxt_switches:")
                {
                    n += line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        Some(n)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Resident memory of `pid` in bytes, if readable.
pub fn rss(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let out = Command::new("ps")
            .args(["-o", "rss=", "-p", &pid.to_string()])
            .output()
            .ok()?;
        let kb: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        Some(kb * 1024)
    }
}

/// Of `pid`'s resident memory, the bytes that are its own (heap, stacks: `RssAnon`) and
/// those that are mapped files (the binary's code, shared libraries: `RssFile`, clean
/// pages the system can drop and macOS's Activity Monitor does not count). Linux only.
pub fn rss_parts(pid: u32) -> Option<(u64, u64)> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
        };
        Some((
            field("RssAnon:")?,
            field("RssFile:")? + field("RssShmem:").unwrap_or(0),
        ))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Raises the soft open-files limit to the hard one (children inherit it); returns the
/// limit now in force.
#[expect(
    unsafe_code,
    reason = "getrlimit/setrlimit have no safe wrapper in std; plain structs on the stack"
)]
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let want = if cfg!(target_os = "macos") {
        // macOS refuses values above OPEN_MAX for the soft limit.
        lim.rlim_max.min(10_240)
    } else {
        lim.rlim_max
    };
    if lim.rlim_cur < want {
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `new` is a valid rlimit read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return want;
        }
    }
    lim.rlim_cur
}

/// The machine: CPU model, cores, OS, rustc, load average at start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical cores available to this process.
    pub cores: usize,
    /// OS name and kernel.
    pub os: String,
    /// `rustc -V`.
    pub rustc: String,
    /// 1-minute load average when the run started (other work sharing the cores).
    pub load_average: String,
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Machine {
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let rustc = command_line("rustc", &["-V"]).unwrap_or_else(|| "unknown".into());
        #[cfg(target_os = "linux")]
        {
            let cpu = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|c| {
                    c.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_else(|| "unknown".into());
            let os_name = std::fs::read_to_string("/etc/os-release")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                        .map(|v| v.trim_matches('"').to_string())
                })
                .unwrap_or_else(|| "Linux".into());
            let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_string())
                .unwrap_or_default();
            let load_average = std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
                .unwrap_or_default();
            Machine {
                cpu,
                cores,
                os: format!("{os_name}, Linux {kernel}"),
                rustc,
                load_average,
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let cpu = command_line("sysctl", &["-n", "machdep.cpu.brand_string"])
                .unwrap_or_else(|| "unknown".into());
            let os = command_line("sw_vers", &["-productVersion"])
                .map(|v| format!("macOS {v}"))
                .unwrap_or_else(|| std::env::consts::OS.into());
            let load_average = command_line("sysctl", &["-n", "vm.loadavg"]).unwrap_or_default();
            Machine {
                cpu,
                cores,
                os,
                rustc,
                load_average,
            }
        }
    }
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The directory results go to: `$CARGO_TARGET_DIR/bench` or `<repo>/target/bench`.
pub fn results_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}
