//! Memory that goes back: after a burst of concurrent streams the real binary returns its
//! free memory to the system once nothing has happened for a moment (src/memory.rs), so
//! the agent does not sit at its peak size all day.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::common::*;

/// A process's resident memory now and at its peak, in KB (Linux `/proc`).
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("rss field")
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Of a process's resident memory, the KB mapped from its own executable without write
/// permission: its code and read-only data (Linux `/proc/<pid>/smaps`).
fn own_code_kb(pid: u32) -> u64 {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe link");
    let exe = exe.to_string_lossy().into_owned();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut counting = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, permissions, offset, device, inode, path.
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            counting = path == exe && !perms.contains('w');
        } else if counting && first == "Rss:" {
            kb += fields
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    kb
}

#[tokio::test]
async fn memory_from_a_burst_of_streams_goes_back_once_the_burst_is_over() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        skip(
            "memory_from_a_burst_of_streams_goes_back_once_the_burst_is_over",
            "reads /proc and releases through glibc's malloc_trim",
        );
        return;
    }
    let words: Vec<String> = (0..40).map(|i| format!("word{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let mock = Mock::start(vec![Reply::stream(&words, Duration::from_millis(5))]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_text("", &[P::new("a", &mock, 1)]);
    let mut bin = Binary::start(dir.path(), &cfg, &[("A_TEST_KEY", "ka-0000000000000000")]);
    bin.wait_ready().await;
    let pid = bin.child.id();
    let (before, _) = rss_kb(pid);

    // 400 streams at once, each on its own connection, read to the end.
    let url = bin.url("/v1/chat/completions");
    let streams = (0..400).map(|_| {
        let url = url.clone();
        async move {
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            let r = c
                .post(&url)
                .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), 200);
            r.text().await.expect("stream")
        }
    });
    for body in join_all(streams).await {
        assert!(body.contains("word39"), "a stream was cut short: {body}");
    }
    let (_, peak) = rss_kb(pid);
    let code_after_burst = own_code_kb(pid);
    let grew = peak.saturating_sub(before);
    assert!(
        grew > 4 * 1024,
        "the burst should grow the agent by MBs: {before} → {peak} KB"
    );

    // Within a few quiet seconds, most of what the burst took is back with the system.
    wait_for(
        Duration::from_secs(20),
        "most of the burst's memory is given back",
        || async {
            let now_kb = rss_kb(pid).0;
            if now_kb <= before + grew / 3 {
                Ok(())
            } else {
                Err(format!(
                    "RSS {now_kb} KB after the burst (start {before} KB, peak {peak} KB)"
                ))
            }
        },
    )
    .await;

    // The code the burst and start-up ran is let go too (clean pages of the executable,
    // mapped again on use), not left resident all day.
    wait_for(
        Duration::from_secs(20),
        "the executable's code pages are given back",
        || async {
            let code = own_code_kb(pid);
            if code * 2 <= code_after_burst {
                Ok(())
            } else {
                Err(format!(
                    "{code} KB of the executable resident, {code_after_burst} KB after the burst"
                ))
            }
        },
    )
    .await;
}
