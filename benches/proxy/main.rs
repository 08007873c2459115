//! The llm-rotator benchmark: a mock provider and a load generator in this process, the
//! real `llm-rotator serve` binary as a child process in front of the mock, and every
//! measurement taken direct-to-mock and through the proxy in the same run. Prints one
//! table (with the machine it ran on) and writes it as JSON to `target/bench/results.json`.
//!
//! Run it with `scripts/bench` (release build) or `scripts/bench --smoke` (a few seconds,
//! debug build, proves it works; its timings mean nothing). Under `cargo test` (no
//! `--bench` argument) it does nothing. It exits non-zero only when something is *wrong*
//! (failed requests, lost chunks, a cooled provider called); a missed timing target is
//! reported in the table, not as a failure.

mod load;
mod mock;
mod process;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use load::{closed_loop, Conn, Run, Timing};
use mock::Mock;
use process::{context_switches, cpu_time, own_threads_cpu, rss, rss_parts, Machine, Proxy};
use report::Report;

/// How much of everything to do.
struct Plan {
    smoke: bool,
    /// Interleaved direct/proxy request pairs at concurrency 1.
    serial: usize,
    /// Interleaved pairs for the 20-chunk stream at concurrency 1.
    serial_streams: usize,
    /// Duration of each concurrency-64 run.
    load_for: Duration,
    /// Cold starts timed.
    startups: usize,
    /// The many-streams phase: streams, chunks each, gap between chunks.
    streams: usize,
    chunks: u32,
    gap_ms: u64,
    /// Paced rotation samples.
    rotations: usize,
    /// `Retry-After` of the cooling provider, seconds.
    cooldown_secs: u64,
    /// The proxy's log level (the product default, `info`, unless
    /// `LLM_ROTATOR_BENCH_LOG_LEVEL` says otherwise).
    log_level: String,
}

impl Plan {
    fn new(smoke: bool) -> Plan {
        let log_level =
            std::env::var("LLM_ROTATOR_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        if smoke {
            Plan {
                smoke,
                serial: 50,
                serial_streams: 20,
                load_for: Duration::from_millis(300),
                startups: 1,
                streams: 50,
                chunks: 5,
                gap_ms: 20,
                rotations: 10,
                cooldown_secs: 1,
                log_level,
            }
        } else {
            Plan {
                smoke,
                serial: 10_000,
                serial_streams: 2_000,
                load_for: Duration::from_secs(4),
                startups: 7,
                streams: 1000,
                chunks: 100,
                gap_ms: 50,
                rotations: 1000,
                cooldown_secs: 2,
                log_level,
            }
        }
    }
}

const CONCURRENCY: usize = 64;
/// Thread name of the mock provider's runtime.
const MOCK_THREADS: &str = "bench-mock";
const STREAM_CHUNKS: u32 = 20;

const JSON_PATH: &str = "/json/v1/chat/completions";
const SSE20_PATH: &str = "/sse/20/0/v1/chat/completions";
const PROXY_PATH: &str = "/v1/chat/completions";

/// A realistic client request (system + user message) for `model`.
fn request_body(model: &str, stream: bool) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."},
                {"role": "user", "content": "Write one sentence about why rate limits exist for public LLM APIs."}
            ],
            "temperature": 0.7,
            "max_tokens": 256,
            "stream": stream
        })
        .to_string(),
    )
}

/// One non-streaming request per translating front-end, for the `fast` provider.
fn front_end_requests() -> Vec<(&'static str, &'static str, Bytes)> {
    let user = "Write one sentence about why rate limits exist for public LLM APIs.";
    vec![
        (
            "/v1/responses",
            "/v1/responses",
            Bytes::from(
                serde_json::json!({"model": "fast", "instructions": "Answer briefly.",
                                   "input": user, "max_output_tokens": 256, "store": false})
                .to_string(),
            ),
        ),
        (
            "/v1/messages",
            "/v1/messages",
            Bytes::from(
                serde_json::json!({"model": "fast", "system": "Answer briefly.", "max_tokens": 256,
                                   "messages": [{"role": "user", "content": user}]})
                .to_string(),
            ),
        ),
        (
            "/v1/completions",
            "/v1/completions",
            Bytes::from(
                serde_json::json!({"model": "fast", "prompt": user, "max_tokens": 256}).to_string(),
            ),
        ),
    ]
}

fn proxy_config(mock: &Mock, plan: &Plan) -> String {
    let m = mock.base();
    let provider = |name: &str, path: &str, model: &str, priority: u32, extra: &str| {
        format!(
            "[[providers]]\nname = \"{name}\"\nbase_url = \"{m}{path}\"\nmodel = \"{model}\"\n\
             priority = {priority}\napi_key_env = \"BENCH_KEY\"\n{extra}\n"
        )
    };
    [
        format!(
            "[server]\nhost = \"127.0.0.1\"\n\n[log]\nlevel = \"{}\"\n",
            plan.log_level
        ),
        provider("fast", "/json/v1", "fast", 1, ""),
        provider(
            "stream20",
            &format!("/sse/{STREAM_CHUNKS}/0/v1"),
            "stream20",
            1,
            "",
        ),
        provider(
            "paced",
            &format!("/sse/{}/{}/v1", plan.chunks, plan.gap_ms),
            "paced",
            1,
            "",
        ),
        // Rotation: `limited` always answers 429 (1 ms hint), `cooling` 429 with
        // Retry-After in seconds; `backup` serves both routes after them.
        provider("limited", "/429/ms/1/0/v1", "rot", 1, ""),
        provider(
            "cooling",
            &format!("/429/s/{}/1/v1", plan.cooldown_secs),
            "cool",
            1,
            "",
        ),
        provider("backup", "/json/v1", "rot", 2, "models = [\"cool\"]"),
    ]
    .join("\n")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench`.
        println!("benches/proxy: run it with scripts/bench (or scripts/bench --smoke)");
        return ExitCode::SUCCESS;
    }
    let plan = Plan::new(args.iter().any(|a| a == "--smoke"));
    match run(&plan) {
        Ok(report) => {
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("\nthe benchmark found problems:");
                for p in &report.problems {
                    eprintln!("  - {p}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Samples a process's RSS every 20 ms while alive; `finish()` gives the peak, with its
/// split into own memory and mapped files at that moment (Linux).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<Peak>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The largest RSS seen, and its parts then.
#[derive(Clone, Copy, Default)]
struct Peak {
    rss: u64,
    parts: Option<(u64, u64)>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(Peak {
            rss: rss(pid).unwrap_or(0),
            parts: rss_parts(pid),
        }));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(r) = rss(pid) {
                    let mut peak = p.lock().unwrap_or_else(PoisonError::into_inner);
                    if r > peak.rss {
                        *peak = Peak {
                            rss: r,
                            parts: rss_parts(pid),
                        };
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.peak.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// CPU time the proxy spent while `f` ran.
fn cpu_during<T>(pid: u32, f: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let before = cpu_time(pid);
    let out = f();
    let after = cpu_time(pid);
    (out, before.zip(after).map(|(b, a)| a.saturating_sub(b)))
}

fn delta(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    before.zip(after).map(|(b, a)| a.saturating_sub(b))
}

fn per(total: Option<Duration>, n: usize) -> Option<Duration> {
    total
        .filter(|_| n > 0)
        .map(|t| t / u32::try_from(n).unwrap_or(u32::MAX))
}

/// Alternates direct and proxied requests on two kept-alive connections, so both see the
/// same machine noise.
async fn interleaved(
    direct: SocketAddr,
    direct_path: &str,
    proxy: SocketAddr,
    body: &Bytes,
    n: usize,
) -> Result<(Vec<Timing>, Vec<Timing>), String> {
    let mut d = Conn::open(direct).await?;
    let mut p = Conn::open(proxy).await?;
    let (mut ds, mut ps) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        ds.push(d.post(direct_path, body, None).await?);
        ps.push(p.post(PROXY_PATH, body, None).await?);
    }
    Ok((ds, ps))
}

fn check_run(report: &mut Report, what: &str, run: &Run, events: Option<u32>) {
    if run.errors > 0 {
        report.problem(format!(
            "{what}: {} failed requests (e.g. {:?})",
            run.errors, run.error_samples
        ));
    }
    if let Some(want) = events {
        let short = run.timings.iter().filter(|t| t.events != want).count();
        if short > 0 {
            report.problem(format!(
                "{what}: {short} streams did not receive all {want} events"
            ));
        }
    }
}

fn run(plan: &Plan) -> Result<Report, String> {
    let open_files = process::raise_open_files();
    let machine = Machine::describe();
    // `LLM_ROTATOR_BENCH_BIN` measures another build (a profiling one, an installed one).
    let exe_path = std::env::var_os("LLM_ROTATOR_BENCH_BIN")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_BIN_EXE_llm-rotator").map(PathBuf::from))
        .ok_or(
            "no llm-rotator binary: run it through scripts/bench or set LLM_ROTATOR_BENCH_BIN",
        )?;
    let exe = exe_path.as_path();
    let mut report = Report::new(machine, plan.smoke, exe, &plan.log_level);
    let need_files = (plan.streams as u64) * 2 + 256;
    if open_files < need_files {
        report.problem(format!(
            "the open-files limit is {open_files}, the stream phase needs about {need_files}; \
             raise it with `ulimit -n`"
        ));
    }
    eprintln!(
        "llm-rotator benchmark{}: {} ({} cores, load {}), {}",
        if plan.smoke { " (smoke)" } else { "" },
        report.machine.cpu,
        report.machine.cores,
        report.machine.load_average,
        exe.display()
    );

    let mock = Mock::start(2, MOCK_THREADS).map_err(|e| format!("mock provider: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-load")
        .enable_all()
        .build()
        .map_err(|e| format!("load runtime: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = proxy_config(&mock, plan);

    // 5. Start-up: spawn to first 200 on /health, several cold starts.
    eprintln!("start-up ...");
    let mut startups = Vec::new();
    let mut proxy = None;
    for i in 0..plan.startups {
        let p = Proxy::start(exe, dir.path(), &config)?;
        startups.push(p.startup);
        if i + 1 == plan.startups {
            proxy = Some(p);
        } else {
            p.stop();
        }
    }
    let proxy = proxy.ok_or("no start-up was measured")?;
    let pid = proxy.pid();
    std::thread::sleep(Duration::from_millis(300));
    let rss_idle = rss(pid);
    let rss_idle_parts = rss_parts(pid);
    let paddr = proxy.addr;
    let maddr = mock.addr;

    let fast = request_body("fast", false);
    let s20 = request_body("stream20", true);
    let s20_direct = request_body("stream20", true);

    // Warm-up: connections, allocator, caches.
    rt.block_on(async {
        let a = closed_loop(
            maddr,
            JSON_PATH,
            fast.clone(),
            8,
            plan.load_for / 4,
            None,
            None,
        );
        let b = closed_loop(
            paddr,
            PROXY_PATH,
            fast.clone(),
            8,
            plan.load_for / 4,
            None,
            None,
        );
        let (a, b) = (a.await, b.await);
        check_run(&mut report, "warm-up (direct)", &a, None);
        check_run(&mut report, "warm-up (proxy)", &b, None);
    });

    // 1. Non-streaming, concurrency 1.
    eprintln!("non-streaming, concurrency 1 ...");
    let mock_before = own_threads_cpu(MOCK_THREADS);
    let switches_before = context_switches(pid);
    let (res, cpu) = cpu_during(pid, || {
        rt.block_on(interleaved(maddr, JSON_PATH, paddr, &fast, plan.serial))
    });
    let switches = context_switches(pid)
        .zip(switches_before)
        .map(|(a, b)| a.saturating_sub(b));
    let mock_cpu = delta(mock_before, own_threads_cpu(MOCK_THREADS));
    let (d1, p1) = res?;
    let cpu_req_c1 = per(cpu, p1.len());
    // The mock served the direct requests and the proxy's upstream ones.
    let mock_req_c1 = per(mock_cpu, d1.len() + p1.len());
    report.latency_pair("non-streaming c=1", &d1, &p1, |t| t.total, true);
    let switches_per_request = switches.map(|s| s as f64 / p1.len().max(1) as f64);

    // The translating front-ends, each next to the chat route on the same provider.
    eprintln!("front-ends, concurrency 1 ...");
    for (name, path, body) in front_end_requests() {
        let serial = |path: &'static str, body: Bytes| {
            let rt = &rt;
            move || rt.block_on(serial_posts(paddr, path, &body, plan.serial))
        };
        let (chat, cpu_chat) = cpu_during(pid, serial(PROXY_PATH, fast.clone()));
        let (other, cpu_other) = cpu_during(pid, serial(path, body));
        let chat = chat?;
        // An older build (measured through LLM_ROTATOR_BENCH_BIN) may not serve it.
        let Ok(other) = other else {
            eprintln!("  {name}: not served by this binary");
            continue;
        };
        report.front_end(
            name,
            &chat,
            &other,
            per(cpu_chat, chat.len()),
            per(cpu_other, other.len()),
        );
    }

    // The dashboard open in a browser (its state and `/metrics` read each second) next to
    // the same chat requests with nothing else reading.
    eprintln!("dashboard open, concurrency 1 ...");
    {
        let serial = || rt.block_on(serial_posts(paddr, PROXY_PATH, &fast, plan.serial));
        let (plain, cpu_plain) = cpu_during(pid, serial);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || dashboard_poller(paddr, &stop))
        };
        let (open, cpu_open) = cpu_during(pid, serial);
        stop.store(true, Ordering::Relaxed);
        let polls = poller.join().unwrap_or(0);
        if let (Ok(plain), Ok(open)) = (plain, open) {
            report.front_end(
                &format!("chat with the dashboard open ({polls} polls)"),
                &plain,
                &open,
                per(cpu_plain, plain.len()),
                per(cpu_open, open.len()),
            );
        }
    }

    // 1. Non-streaming, concurrency 64: latency and max req/s.
    eprintln!("non-streaming, concurrency {CONCURRENCY} ...");
    let d64 = rt.block_on(closed_loop(
        maddr,
        JSON_PATH,
        fast.clone(),
        CONCURRENCY,
        plan.load_for,
        None,
        None,
    ));
    let sampler = RssSampler::start(pid);
    let (p64, cpu) = cpu_during(pid, || {
        rt.block_on(closed_loop(
            paddr,
            PROXY_PATH,
            fast.clone(),
            CONCURRENCY,
            plan.load_for,
            None,
            None,
        ))
    });
    let rss_load = sampler.finish().rss;
    check_run(&mut report, "non-streaming c=64 (direct)", &d64, None);
    check_run(&mut report, "non-streaming c=64 (proxy)", &p64, None);
    let cpu_req_c64 = per(cpu, p64.timings.len());
    report.latency_pair(
        &format!("non-streaming c={CONCURRENCY}"),
        &d64.timings,
        &p64.timings,
        |t| t.total,
        false,
    );
    report.throughput(d64.rate(), p64.rate());

    // 2. Streaming, 20 chunks, concurrency 1 and 64.
    eprintln!("streaming ({STREAM_CHUNKS} chunks), concurrency 1 ...");
    let (res, cpu) = cpu_during(pid, || {
        rt.block_on(async {
            let mut d = Conn::open(maddr).await?;
            let mut p = Conn::open(paddr).await?;
            let (mut ds, mut ps) = (Vec::new(), Vec::new());
            for _ in 0..plan.serial_streams {
                ds.push(d.post(SSE20_PATH, &s20_direct, None).await?);
                ps.push(p.post(PROXY_PATH, &s20, None).await?);
            }
            Ok::<_, String>((ds, ps))
        })
    });
    let (ds1, ps1) = res?;
    let cpu_stream20 = per(cpu, ps1.len());
    for (what, set) in [("direct", &ds1), ("proxy", &ps1)] {
        let short = set.iter().filter(|t| t.events != STREAM_CHUNKS + 1).count();
        if short > 0 {
            report.problem(format!(
                "streaming c=1 ({what}): {short} streams were short"
            ));
        }
    }
    report.latency_pair("stream TTFB c=1", &ds1, &ps1, |t| t.ttfb, true);
    report.latency_pair("stream total c=1", &ds1, &ps1, |t| t.total, false);

    eprintln!("streaming ({STREAM_CHUNKS} chunks), concurrency {CONCURRENCY} ...");
    let ds64 = rt.block_on(closed_loop(
        maddr,
        SSE20_PATH,
        s20_direct.clone(),
        CONCURRENCY,
        plan.load_for,
        None,
        None,
    ));
    let ps64 = rt.block_on(closed_loop(
        paddr,
        PROXY_PATH,
        s20.clone(),
        CONCURRENCY,
        plan.load_for,
        None,
        None,
    ));
    check_run(
        &mut report,
        "streaming c=64 (direct)",
        &ds64,
        Some(STREAM_CHUNKS + 1),
    );
    check_run(
        &mut report,
        "streaming c=64 (proxy)",
        &ps64,
        Some(STREAM_CHUNKS + 1),
    );
    report.latency_pair(
        &format!("stream TTFB c={CONCURRENCY}"),
        &ds64.timings,
        &ps64.timings,
        |t| t.ttfb,
        false,
    );
    report.latency_pair(
        &format!("stream total c={CONCURRENCY}"),
        &ds64.timings,
        &ps64.timings,
        |t| t.total,
        false,
    );

    // 4. Many open streams at once, paced chunks.
    eprintln!(
        "{} concurrent streams ({} chunks, {} ms apart) ...",
        plan.streams, plan.chunks, plan.gap_ms
    );
    let gap = Duration::from_millis(plan.gap_ms);
    let paced_direct_path: &'static str = Box::leak(
        format!("/sse/{}/{}/v1/chat/completions", plan.chunks, plan.gap_ms).into_boxed_str(),
    );
    let paced = request_body("paced", true);
    let long = Duration::from_secs(120);
    let mock_before = own_threads_cpu(MOCK_THREADS);
    let dmany = rt.block_on(closed_loop(
        maddr,
        paced_direct_path,
        paced.clone(),
        plan.streams,
        long,
        Some(1),
        Some(gap),
    ));
    let mock_cpu = delta(mock_before, own_threads_cpu(MOCK_THREADS));
    let direct_events: usize = dmany.timings.iter().map(|t| t.events as usize).sum();
    let mock_chunk = mock_cpu.map(|c| c / u32::try_from(direct_events.max(1)).unwrap_or(u32::MAX));
    let sampler = RssSampler::start(pid);
    let (pmany, cpu) = cpu_during(pid, || {
        rt.block_on(closed_loop(
            paddr,
            PROXY_PATH,
            paced.clone(),
            plan.streams,
            long,
            Some(1),
            Some(gap),
        ))
    });
    let rss_streams = sampler.finish();
    check_run(
        &mut report,
        "many streams (direct)",
        &dmany,
        Some(plan.chunks + 1),
    );
    check_run(
        &mut report,
        "many streams (proxy)",
        &pmany,
        Some(plan.chunks + 1),
    );
    let events: usize = pmany.timings.iter().map(|t| t.events as usize).sum();
    // Per chunk, net of what starting a request costs (measured at concurrency 1).
    let cpu_chunk = cpu.zip(cpu_req_c1).map(|(total, req)| {
        let net = total.saturating_sub(req * u32::try_from(pmany.timings.len()).unwrap_or(0));
        net / u32::try_from(events.max(1)).unwrap_or(u32::MAX)
    });
    report.many_streams(plan.streams, plan.chunks, plan.gap_ms, &dmany, &pmany);

    // 3. CPU, 4. memory, 5. start-up.
    report.cpu(
        cpu_req_c1,
        cpu_req_c64,
        cpu_stream20,
        cpu_chunk,
        mock_req_c1,
        mock_chunk,
    );
    report.switches(switches_per_request);
    report.memory(
        rss_idle,
        rss_idle_parts,
        rss_load,
        rss_streams.rss,
        rss_streams.parts,
        plan.streams,
    );
    report.startup(&startups);

    // 6. Rotation cost: every rotated request meets `limited` (429, 1 ms cooldown) first;
    // the baseline goes straight to `backup`. Paced so each cooldown has ended.
    eprintln!("rotation ...");
    let rot = request_body("rot", false);
    let pinned = request_body("backup/rot", false);
    let before = mock.calls_429(0);
    let (base, rotated) = rt.block_on(async {
        let mut p = Conn::open(paddr).await?;
        let (mut b, mut r) = (Vec::new(), Vec::new());
        for _ in 0..plan.rotations {
            tokio::time::sleep(Duration::from_millis(3)).await;
            b.push(p.post(PROXY_PATH, &pinned, None).await?);
            tokio::time::sleep(Duration::from_millis(3)).await;
            r.push(p.post(PROXY_PATH, &rot, None).await?);
        }
        Ok::<_, String>((b, r))
    })?;
    let rotations = mock.calls_429(0) - before;
    if rotated
        .iter()
        .any(|t| t.provider.as_deref() != Some("backup"))
    {
        report.problem("a rotated request was not answered by the backup provider".into());
    }
    report.rotation(&base, &rotated, rotations);

    // 6. Cooldown: after one 429 with Retry-After, the provider gets nothing until it ends.
    eprintln!("cooldown ({} s) ...", plan.cooldown_secs);
    let cool = request_body("cool", false);
    let cooldown = Duration::from_secs(plan.cooldown_secs);
    let (first, during, after) = rt.block_on(async {
        let mut p = Conn::open(paddr).await?;
        let t0 = Instant::now();
        p.post(PROXY_PATH, &cool, None).await?;
        let first = mock.calls_429(1);
        let hammer = closed_loop(
            paddr,
            PROXY_PATH,
            cool.clone(),
            8,
            cooldown.saturating_sub(Duration::from_millis(400)),
            None,
            None,
        )
        .await;
        let during = mock.calls_429(1) - first;
        tokio::time::sleep(
            (t0 + cooldown + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
        )
        .await;
        p.post(PROXY_PATH, &cool, None).await?;
        let after = mock.calls_429(1) - first - during;
        Ok::<_, String>((first, (during, hammer), after))
    })?;
    let (during, hammer) = during;
    check_run(&mut report, "cooldown phase", &hammer, None);
    report.cooldown(
        first,
        during,
        hammer.timings.len(),
        after,
        plan.cooldown_secs,
    );
    if during > 0 {
        report.problem(format!(
            "the cooled provider received {during} calls during its cooldown"
        ));
    }
    if first != 1 || after != 1 {
        report.problem(format!(
            "the rate-limited provider was called {first} times first and {after} times after its cooldown (want 1 and 1)"
        ));
    }

    // 7. Idle after load: what the agent keeps once the burst is over, as Activity
    // Monitor shows it all day.
    let settle = if plan.smoke {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    eprintln!("idle after load ({} s) ...", settle.as_secs());
    std::thread::sleep(settle);
    report.idle_after_load(rss(pid), rss_parts(pid), settle);

    // 8. A shared pool (Redis on loopback): the same chat requests through a second agent
    // that shares its pool, alternating with the first one that does not.
    eprintln!("shared pool, concurrency 1 ...");
    match shared_pool_phase(exe, &config, &rt, paddr, pid, plan.serial) {
        Ok(Some(((plain, cpu_plain), (shared, cpu_shared)))) => {
            report.shared_pool(&plain, &shared, cpu_plain, cpu_shared);
        }
        Ok(None) => report.not_run("chat with a shared pool", "redis-server is not installed"),
        Err(e) => report.problem(format!("shared pool phase: {e}")),
    }

    proxy.stop();
    drop(mock);
    report.finish(&process::results_dir())?;
    Ok(report)
}

/// `n` requests one after another on one connection to `addr`.
/// Timings of serial chat requests and the agent's CPU time over them.
type Measured = (Vec<Timing>, Option<Duration>);

/// Starts `redis-server` on a loopback port and a second agent on `config` plus a
/// `[shared]` section, then sends `n` chat requests to each agent, alternating in four
/// rounds so drift on the machine hits both alike. `None` when Redis is not installed.
fn shared_pool_phase(
    exe: &std::path::Path,
    config: &str,
    rt: &tokio::runtime::Runtime,
    plain: SocketAddr,
    plain_pid: u32,
    n: usize,
) -> Result<Option<(Measured, Measured)>, String> {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        return Ok(None);
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // redis-server cannot bind port 0 and report it: a free port is picked for it.
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--port",
        ])
        .arg(redis_port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server: {e}"))?;
    let config =
        format!("{config}\n[shared]\nurl = \"redis://127.0.0.1:{redis_port}\"\npool = \"bench\"\n");
    let result = (|| {
        let agent = Proxy::start(exe, dir.path(), &config)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !process::get_contains(agent.addr, "/status", "\"state\":\"online\"") {
            if Instant::now() > deadline {
                agent.stop();
                return Err("the agent did not reach the shared pool's Redis".to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let body = request_body("fast", false);
        let (mut a, mut b) = ((Vec::new(), Duration::ZERO), (Vec::new(), Duration::ZERO));
        for _ in 0..4 {
            for (addr, pid, into) in [
                (plain, plain_pid, &mut a),
                (agent.addr, agent.pid(), &mut b),
            ] {
                let (t, cpu) = cpu_during(pid, || {
                    rt.block_on(serial_posts(addr, PROXY_PATH, &body, n / 4))
                });
                into.0.extend(t?);
                into.1 += cpu.unwrap_or_default();
            }
        }
        agent.stop();
        let (cpu_a, cpu_b) = (per(Some(a.1), a.0.len()), per(Some(b.1), b.0.len()));
        Ok(Some(((a.0, cpu_a), (b.0, cpu_b))))
    })();
    let _ = redis.kill();
    let _ = redis.wait();
    result
}

async fn serial_posts(
    addr: SocketAddr,
    path: &str,
    body: &Bytes,
    n: usize,
) -> Result<Vec<Timing>, String> {
    let mut c = Conn::open(addr).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.post(path, body, None).await?);
    }
    Ok(out)
}

/// What an open dashboard does: `GET /ui/api/state` and `GET /metrics` once a second,
/// until `stop`. Returns how many rounds it made.
fn dashboard_poller(addr: SocketAddr, stop: &AtomicBool) -> u32 {
    use std::io::{Read, Write};
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        for path in ["/ui/api/state", "/metrics"] {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let req =
                    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                let mut sink = Vec::new();
                let _ = s
                    .write_all(req.as_bytes())
                    .and_then(|()| s.read_to_end(&mut sink));
            }
        }
        rounds += 1;
        for _ in 0..10 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    rounds
}
