//! The benchmark's table: one row per measurement with direct and proxied values, the
//! result that the target applies to, the target and PASS/MISS. Printed as Markdown (so
//! the README can carry it as is) and written as JSON.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::load::{Run, Timing};
use crate::process::Machine;

/// Whether a row met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Met.
    #[serde(rename = "PASS")]
    Pass,
    /// Missed.
    #[serde(rename = "MISS")]
    Miss,
    /// No target: context for the other rows.
    #[serde(rename = "info")]
    Info,
}

impl Verdict {
    fn of(ok: bool) -> Verdict {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }

    fn text(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// Direct to the mock.
    pub direct: String,
    /// Through llm-rotator.
    pub proxy: String,
    /// What the target is checked against (added latency, ratio, per-unit cost...).
    pub result: String,
    /// The target.
    pub target: String,
    /// PASS / MISS / info.
    pub verdict: Verdict,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Smoke runs only prove the benchmark works.
    pub smoke: bool,
    /// The binary measured.
    pub binary: String,
    /// The proxy's log level during the run.
    pub log_level: String,
    /// When (UTC).
    pub date: String,
    /// The table.
    pub rows: Vec<Row>,
    /// Things that are wrong, not slow (failed requests, lost chunks, a cooled provider
    /// called): the run fails when there are any.
    pub problems: Vec<String>,
}

/// `0.123 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `12.3 µs`.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn signed_ms(direct: Duration, proxy: Duration) -> (String, f64) {
    let added = (proxy.as_secs_f64() - direct.as_secs_f64()) * 1e3;
    (format!("{added:+.3} ms"), added)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

/// Nearest-rank percentile (`p` in 0..=100); zero for an empty set.
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn pick(set: &[Timing], f: impl Fn(&Timing) -> Duration) -> Vec<Duration> {
    set.iter().map(f).collect()
}

impl Report {
    /// An empty report.
    pub fn new(machine: Machine, smoke: bool, binary: &Path, log_level: &str) -> Report {
        Report {
            machine,
            smoke,
            binary: binary.display().to_string(),
            log_level: log_level.to_string(),
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            rows: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Records something wrong.
    pub fn problem(&mut self, what: String) {
        self.problems.push(what);
    }

    fn row(
        &mut self,
        metric: impl Into<String>,
        direct: impl Into<String>,
        proxy: impl Into<String>,
        result: impl Into<String>,
        target: impl Into<String>,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            metric: metric.into(),
            direct: direct.into(),
            proxy: proxy.into(),
            result: result.into(),
            target: target.into(),
            verdict,
        });
    }

    /// p50 and p99 rows of `f` over both sets; with `targeted`, the added-latency targets
    /// (p50 ≤ 0.1 ms, p99 ≤ 0.5 ms) apply.
    pub fn latency_pair(
        &mut self,
        name: &str,
        direct: &[Timing],
        proxy: &[Timing],
        f: impl Fn(&Timing) -> Duration + Copy,
        targeted: bool,
    ) {
        let (mut d, mut p) = (pick(direct, f), pick(proxy, f));
        for (q, limit) in [(50.0, 0.1), (99.0, 0.5)] {
            let (dq, pq) = (percentile(&mut d, q), percentile(&mut p, q));
            let (added, added_ms) = signed_ms(dq, pq);
            let (target, verdict) = if targeted {
                (
                    format!("≤ {limit:.3} ms added"),
                    Verdict::of(added_ms <= limit),
                )
            } else {
                (String::new(), Verdict::Info)
            };
            self.row(
                format!("{name} p{q:.0} (n={})", p.len()),
                ms(dq),
                ms(pq),
                added,
                target,
                verdict,
            );
        }
    }

    /// A translating front-end next to the chat route: p50 at c=1 (the translation's
    /// added latency) and CPU per request.
    /// The same chat requests through an agent with a shared pool (Redis on loopback) and
    /// one without: the target is p50 within 0.05 ms.
    pub fn shared_pool(
        &mut self,
        plain: &[Timing],
        shared: &[Timing],
        cpu_plain: Option<Duration>,
        cpu_shared: Option<Duration>,
    ) {
        let f = |t: &Timing| t.total;
        let (mut a, mut b) = (pick(plain, f), pick(shared, f));
        let (aq, bq) = (percentile(&mut a, 50.0), percentile(&mut b, 50.0));
        let (added, added_ms) = signed_ms(aq, bq);
        self.row(
            format!(
                "chat p50 c=1 with a shared pool (n={}), next to without",
                b.len()
            ),
            format!("without {}", ms(aq)),
            ms(bq),
            added,
            "≤ +0.05 ms",
            Verdict::of(added_ms <= 0.05),
        );
        let na = || "n/a".to_string();
        self.row(
            "CPU per chat request with a shared pool, c=1",
            cpu_plain.map_or_else(String::new, |v| format!("without {}", us(v))),
            cpu_shared.map_or_else(na, us),
            cpu_shared.map_or_else(na, us),
            "",
            Verdict::Info,
        );
    }

    /// A phase that could not run here, and why.
    pub fn not_run(&mut self, metric: &str, why: &str) {
        self.row(metric, "", "", format!("not run: {why}"), "", Verdict::Info);
    }

    pub fn front_end(
        &mut self,
        name: &str,
        chat: &[Timing],
        other: &[Timing],
        cpu_chat: Option<Duration>,
        cpu_other: Option<Duration>,
    ) {
        let f = |t: &Timing| t.total;
        let (mut c, mut o) = (pick(chat, f), pick(other, f));
        let (cq, oq) = (percentile(&mut c, 50.0), percentile(&mut o, 50.0));
        let (added, _) = signed_ms(cq, oq);
        self.row(
            format!("{name} p50 c=1 (n={}), next to chat", o.len()),
            format!("chat {}", ms(cq)),
            ms(oq),
            added,
            "",
            Verdict::Info,
        );
        let na = || "n/a".to_string();
        self.row(
            format!("CPU per {name} request, c=1"),
            cpu_chat.map_or_else(String::new, |v| format!("chat {}", us(v))),
            cpu_other.map_or_else(na, us),
            cpu_other.map_or_else(na, us),
            "",
            Verdict::Info,
        );
    }

    /// Max req/s at concurrency 64.
    pub fn throughput(&mut self, direct: f64, proxy: f64) {
        let ratio = proxy / direct.max(1e-9) * 100.0;
        self.row(
            "non-streaming max req/s c=64",
            format!("{direct:.0}/s"),
            format!("{proxy:.0}/s"),
            format!("{ratio:.0}% of direct"),
            "≥ 20% of direct",
            Verdict::of(ratio >= 20.0),
        );
    }

    /// The many-streams phase.
    pub fn many_streams(&mut self, n: usize, chunks: u32, gap_ms: u64, d: &Run, p: &Run) {
        let want = chunks + 1;
        let complete = |r: &Run| r.timings.iter().filter(|t| t.events == want).count();
        let (dc, pc) = (complete(d), complete(p));
        self.row(
            format!("{n} streams × {chunks} chunks, {gap_ms} ms apart: complete"),
            format!("{dc}/{n}, {} errors", d.errors),
            format!("{pc}/{n}, {} errors", p.errors),
            format!("{pc}/{n}"),
            "all, 0 errors",
            Verdict::of(pc == n && p.errors == 0),
        );
        let (mut dt, mut pt) = (pick(&d.timings, |t| t.ttfb), pick(&p.timings, |t| t.ttfb));
        let (dq, pq) = (percentile(&mut dt, 99.0), percentile(&mut pt, 99.0));
        let (added, added_ms) = signed_ms(dq, pq);
        self.row(
            format!("{n} streams: TTFB p99"),
            ms(dq),
            ms(pq),
            added,
            "≤ 50 ms added",
            Verdict::of(added_ms <= 50.0),
        );
        let (mut dl, mut pl) = (
            pick(&d.timings, |t| t.max_lag),
            pick(&p.timings, |t| t.max_lag),
        );
        let (dq, pq) = (percentile(&mut dl, 99.0), percentile(&mut pl, 99.0));
        self.row(
            format!("{n} streams: worst chunk lateness p99"),
            ms(dq),
            ms(pq),
            signed_ms(dq, pq).0,
            "",
            Verdict::Info,
        );
    }

    /// CPU rows.
    pub fn cpu(
        &mut self,
        req_c1: Option<Duration>,
        req_c64: Option<Duration>,
        stream20: Option<Duration>,
        chunk: Option<Duration>,
        mock_req: Option<Duration>,
        mock_chunk: Option<Duration>,
    ) {
        let na = || "n/a".to_string();
        let mock = |v: Option<Duration>| v.map_or(String::new(), |v| format!("mock {}", us(v)));
        for (name, v, m) in [
            ("CPU per proxied request, c=1", req_c1, mock(mock_req)),
            ("CPU per proxied request, c=64", req_c64, String::new()),
        ] {
            self.row(
                name,
                m,
                v.map_or_else(na, us),
                v.map_or_else(na, us),
                "≤ 50 µs",
                v.map_or(Verdict::Info, |v| {
                    Verdict::of(v <= Duration::from_micros(50))
                }),
            );
        }
        self.row(
            "CPU per proxied 20-chunk stream, c=1",
            "",
            stream20.map_or_else(na, us),
            stream20.map_or_else(na, us),
            "",
            Verdict::Info,
        );
        self.row(
            "CPU per streamed chunk (paced streams)",
            mock(mock_chunk),
            chunk.map_or_else(na, us),
            chunk.map_or_else(na, us),
            "≤ 5 µs",
            chunk.map_or(Verdict::Info, |v| {
                Verdict::of(v <= Duration::from_micros(5))
            }),
        );
    }

    /// Context switches per proxied request at concurrency 1.
    pub fn switches(&mut self, per_request: Option<f64>) {
        let text = per_request.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"));
        self.row(
            "thread context switches per proxied request, c=1",
            "",
            text.clone(),
            text,
            "",
            Verdict::Info,
        );
    }

    /// Memory rows.
    pub fn memory(
        &mut self,
        idle: Option<u64>,
        idle_parts: Option<(u64, u64)>,
        load: u64,
        streams: u64,
        streams_parts: Option<(u64, u64)>,
        n: usize,
    ) {
        let idle_text = idle.map_or_else(|| "n/a".into(), mb);
        self.row(
            "RSS idle (headless serve)",
            "",
            idle_text.clone(),
            with_parts(idle_text, idle_parts),
            "≤ 15 MB",
            idle.map_or(Verdict::Info, |v| Verdict::of(v <= 15 * 1024 * 1024)),
        );
        self.row(
            "RSS peak under load (c=64)",
            "",
            mb(load),
            mb(load),
            "",
            Verdict::Info,
        );
        self.row(
            format!("RSS peak with {n} open streams"),
            "",
            mb(streams),
            with_parts(mb(streams), streams_parts),
            "≤ 60 MB",
            Verdict::of(streams > 0 && streams <= 60 * 1024 * 1024),
        );
    }

    /// RSS with nothing in flight, `after` the last phase ended.
    pub fn idle_after_load(
        &mut self,
        rss: Option<u64>,
        parts: Option<(u64, u64)>,
        after: Duration,
    ) {
        let text = rss.map_or_else(|| "n/a".into(), mb);
        self.row(
            format!("RSS idle {} s after load", after.as_secs()),
            "",
            text.clone(),
            with_parts(text, parts),
            "≤ 15 MB",
            rss.map_or(Verdict::Info, |v| Verdict::of(v <= 15 * 1024 * 1024)),
        );
    }

    /// Start-up row.
    pub fn startup(&mut self, times: &[Duration]) {
        let mut t = times.to_vec();
        let p50 = percentile(&mut t, 50.0);
        let max = t.last().copied().unwrap_or_default();
        self.row(
            format!("start → first /health 200 (n={})", times.len()),
            "",
            format!("p50 {}", ms(p50)),
            format!("max {}", ms(max)),
            "≤ 50 ms",
            Verdict::of(max <= Duration::from_millis(50)),
        );
    }

    /// Rotation cost rows: `base` went straight to the working provider, `rotated` met a
    /// 429 first.
    pub fn rotation(&mut self, base: &[Timing], rotated: &[Timing], rotations: u64) {
        let (mut b, mut r) = (pick(base, |t| t.total), pick(rotated, |t| t.total));
        for (q, target) in [(50.0, Some(0.2)), (99.0, None)] {
            let (bq, rq) = (percentile(&mut b, q), percentile(&mut r, q));
            let (added, added_ms) = signed_ms(bq, rq);
            self.row(
                format!(
                    "rotation after a 429 p{q:.0} ({rotations} rotations in {} requests)",
                    r.len()
                ),
                format!("success-only {}", ms(bq)),
                format!("rotated {}", ms(rq)),
                added,
                target.map_or(String::new(), |t| format!("≤ {t:.3} ms added")),
                target.map_or(Verdict::Info, |t| Verdict::of(added_ms <= t)),
            );
        }
    }

    /// Cooldown row.
    pub fn cooldown(&mut self, first: u64, during: u64, requests: usize, after: u64, secs: u64) {
        self.row(
            format!("calls to a provider cooling for {secs} s after a 429"),
            format!("first request: {first}"),
            format!("during: {during} (of {requests} requests)"),
            format!("{during} during, {after} after it ends"),
            "0 during",
            Verdict::of(during == 0),
        );
    }

    /// Prints the table and writes `dir/results.json` (smoke runs: `dir/smoke.json`).
    pub fn finish(&self, dir: &Path) -> Result<(), String> {
        println!("{}", self.markdown());
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let file = dir.join(if self.smoke {
            "smoke.json"
        } else {
            "results.json"
        });
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&file, json).map_err(|e| format!("write {}: {e}", file.display()))?;
        eprintln!("\nwritten to {}", file.display());
        Ok(())
    }

    /// The table as Markdown, headed by the machine.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "llm-rotator benchmark{}, {}\nMachine: {} · {} cores · {} · {} · load average at start {}\n\
             Proxy (`llm-rotator serve`, log level {}), mock provider and load \
             generator share these cores.\n\n",
            if self.smoke {
                " (SMOKE RUN: timings are meaningless)"
            } else {
                ""
            },
            self.date,
            m.cpu,
            m.cores,
            m.os,
            m.rustc,
            m.load_average,
            self.log_level,
        );
        let header = ["metric", "direct", "llm-rotator", "result", "target", ""];
        let cells: Vec<[&str; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.metric.as_str(),
                    r.direct.as_str(),
                    r.proxy.as_str(),
                    r.result.as_str(),
                    r.target.as_str(),
                    r.verdict.text(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: &[&str; 6]| {
            let mut s = String::from("|");
            for (c, w) in cols.iter().zip(widths) {
                let pad = w - c.chars().count();
                s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
            }
            s.push('\n');
            s
        };
        out.push_str(&line(&header));
        let mut sep = String::from("|");
        for w in widths {
            sep.push_str(&format!("{}|", "-".repeat(w + 2)));
        }
        out.push_str(&sep);
        out.push('\n');
        for row in &cells {
            out.push_str(&line(row));
        }
        if !self.problems.is_empty() {
            out.push_str("\nProblems:\n");
            for p in &self.problems {
                out.push_str(&format!("- {p}\n"));
            }
        }
        out
    }
}

/// `text` followed by the resident split into the process's own memory and mapped files.
fn with_parts(text: String, parts: Option<(u64, u64)>) -> String {
    match parts {
        Some((anon, file)) => format!("{text} (own {}, files {})", mb(anon), mb(file)),
        None => text,
    }
}
