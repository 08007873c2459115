//! `llm-rotator doctor`: the "Test connection" an app such as Osaurus needs, run against
//! the running instance. Three checks, each printed as a one-line verdict as it ends:
//! `GET /v1/models`, one tiny chat and one tiny stream, the answers decoded by
//! [`crate::strict`] as a strict client would; then a one-line summary.
//!
//! It owns the checks and their wording. It finds the instance the way `status` does
//! ([`crate::client::instance_config`]) and only talks to it over HTTP: it never touches
//! the config file, the key store or provider state. The verdicts are pure functions of
//! what came back, so they are unit-tested without a server.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::agent::ServeOptions;
use crate::client::{client_runtime, instance_config, instance_request};
use crate::config::Config;
use crate::strict;

/// How long `GET /v1/models` may take: it is answered locally, without any provider.
const MODELS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a chat may take: long enough for the instance to rotate through slow
/// providers (its own stream start limit is at most 115 s).
const CHAT_TIMEOUT: Duration = Duration::from_secs(130);
/// Longest reply text quoted in a verdict.
const QUOTE_CHARS: usize = 40;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It worked; what was seen.
    Ok(String),
    /// It failed; why, with the instance's own error message when it sent one.
    Fail(String),
}

impl Verdict {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Ok(_))
    }
}

/// A check's name and outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Short name: `models`, `chat` or `stream`.
    pub name: &'static str,
    /// How it went.
    pub verdict: Verdict,
}

/// What the instance answered to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The `x-provider` header: which provider answered.
    pub provider: Option<String>,
    /// The `x-model` header: with which model.
    pub model: Option<String>,
    /// The whole body.
    pub body: String,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
    /// From sending the request to the first byte of the body.
    pub first_byte: Option<Duration>,
}

/// The verdict line: `ok    chat    answered by ...` / `FAIL  chat    HTTP 502: ...`.
pub fn verdict_line(step: &Step) -> String {
    let (mark, detail) = match &step.verdict {
        Verdict::Ok(d) => ("ok", d),
        Verdict::Fail(d) => ("FAIL", d),
    };
    format!("{mark:<4}  {:<6}  {detail}", step.name)
}

/// The closing line: `Ok` with the line to print when every check passed, else `Err`
/// with the failure summary.
pub fn summary(steps: &[Step], endpoint: &str) -> std::result::Result<String, String> {
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| !s.verdict.passed())
        .map(|s| s.name)
        .collect();
    if failed.is_empty() {
        Ok(format!(
            "all {} checks passed: point the app at {endpoint} with model \"auto\"",
            steps.len()
        ))
    } else {
        Err(format!(
            "{} of {} checks failed ({})",
            failed.len(),
            steps.len(),
            failed.join(", ")
        ))
    }
}

/// What to say when nothing answers on `base_url`.
pub fn not_running(base_url: &str) -> String {
    format!(
        "no llm-rotator is answering on {base_url}; start it with `llm-rotator serve` or \
         `llm-rotator service install`"
    )
}

/// The instance's own words for a failed answer: `HTTP 502: <error.message>`, or the
/// start of the body when it is not an OpenAI error.
pub fn failure_detail(status: u16, body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| shorten(body.trim(), 200));
    if message.is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        format!("HTTP {status}: {message}")
    }
}

/// Check (a): `GET /v1/models` is a 200 model list as Osaurus reads it on connect.
pub fn models_verdict(answer: &Answer) -> Verdict {
    if answer.status != 200 {
        return Verdict::Fail(failure_detail(answer.status, &answer.body));
    }
    match strict::check_models(&answer.body) {
        Ok(ids) if ids.is_empty() => Verdict::Fail("GET /v1/models lists no model".into()),
        Ok(ids) => Verdict::Ok(format!(
            "GET /v1/models: {} models in {} ms ({})",
            ids.len(),
            answer.elapsed.as_millis(),
            shorten(&ids.join(", "), 60)
        )),
        Err(e) => Verdict::Fail(format!(
            "GET /v1/models: a strict client cannot decode the list: {}",
            crate::logging::error_chain(&e)
        )),
    }
}

/// Check (b): a non-streaming chat decodes strictly.
pub fn completion_verdict(answer: &Answer) -> Verdict {
    if answer.status != 200 {
        return Verdict::Fail(failure_detail(answer.status, &answer.body));
    }
    if let Err(e) = strict::check_completion(&answer.body) {
        return Verdict::Fail(format!(
            "{}: a strict client cannot decode the answer: {}",
            answered_by(answer),
            crate::logging::error_chain(&e)
        ));
    }
    let text = serde_json::from_str::<Value>(&answer.body)
        .ok()
        .and_then(|v| {
            v["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    Verdict::Ok(format!(
        "{} in {} ms: {:?}",
        answered_by(answer),
        answer.elapsed.as_millis(),
        shorten(text.trim(), QUOTE_CHARS)
    ))
}

/// Check (c): a streamed chat decodes strictly, chunk by chunk.
pub fn stream_verdict(answer: &Answer) -> Verdict {
    if answer.status != 200 {
        return Verdict::Fail(failure_detail(answer.status, &answer.body));
    }
    let summary = match strict::check_stream(&answer.body) {
        Ok(s) => s,
        Err(e) => {
            return Verdict::Fail(format!(
                "{}: a strict client cannot decode the stream: {}",
                answered_by(answer),
                crate::logging::error_chain(&e)
            ))
        }
    };
    if let Some(err) = &summary.error {
        return Verdict::Fail(format!(
            "{}: the stream ended with an error: {}",
            answered_by(answer),
            err.message
        ));
    }
    let first_byte = answer
        .first_byte
        .map_or_else(|| "-".to_string(), |d| d.as_millis().to_string());
    let usage = if summary.usage {
        "usage chunk: yes"
    } else {
        "usage chunk: no (the app will not see token counts)"
    };
    Verdict::Ok(format!(
        "{}: first byte after {first_byte} ms, {} events, {usage}: {:?}",
        answered_by(answer),
        summary.data_events,
        shorten(summary.content.trim(), QUOTE_CHARS)
    ))
}

/// `answered by groq (llama-3.3-70b)`, from the `x-provider` and `x-model` headers.
fn answered_by(answer: &Answer) -> String {
    match (&answer.provider, &answer.model) {
        (Some(p), Some(m)) => format!("answered by {p} ({m})"),
        (Some(p), None) => format!("answered by {p}"),
        (None, _) => "answered without an x-provider header".to_string(),
    }
}

/// At most `max` characters of `s`, with `...` when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Runs `llm-rotator doctor` against the running instance.
pub fn run(opts: &ServeOptions) -> Result<ExitCode> {
    let config = instance_config(opts)?;
    client_runtime()?.block_on(checks(&config))
}

async fn checks(config: &Config) -> Result<ExitCode> {
    let client = reqwest::Client::builder().build()?;
    let mut steps = Vec::new();

    let models = instance_request(&client, config, reqwest::Method::GET, "/v1/models")
        .timeout(MODELS_TIMEOUT);
    let answer = match fetch(models).await {
        Err(e) if e.is_connect() => anyhow::bail!(not_running(&config.admin_url())),
        other => other,
    };
    report(&mut steps, "models", answer, models_verdict);

    let chat = json!({
        "model": "auto",
        "messages": [{"role": "user", "content": "Say OK"}],
        "max_tokens": 5
    });
    let post = |body: &Value| {
        instance_request(
            &client,
            config,
            reqwest::Method::POST,
            "/v1/chat/completions",
        )
        .timeout(CHAT_TIMEOUT)
        .json(body)
    };
    report(
        &mut steps,
        "chat",
        fetch(post(&chat)).await,
        completion_verdict,
    );

    let mut stream = chat;
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    // Osaurus asks for a stream with this Accept header too.
    let stream_req = post(&stream).header(reqwest::header::ACCEPT, "text/event-stream");
    report(
        &mut steps,
        "stream",
        fetch(stream_req).await,
        stream_verdict,
    );

    match summary(&steps, &config.endpoint_url()) {
        Ok(line) => {
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(failed) => anyhow::bail!("doctor: {failed}"),
    }
}

/// Records and prints one check's verdict; a request that got no answer fails the check.
fn report(
    steps: &mut Vec<Step>,
    name: &'static str,
    answer: reqwest::Result<Answer>,
    verdict: fn(&Answer) -> Verdict,
) {
    let verdict = match answer {
        Ok(a) => verdict(&a),
        Err(e) => Verdict::Fail(format!("no answer: {}", crate::logging::error_chain(&e))),
    };
    let step = Step { name, verdict };
    println!("{}", verdict_line(&step));
    // The lines are progress: show each as its check ends, not when stdout fills.
    let _ = std::io::stdout().flush();
    steps.push(step);
}

/// Sends `req` and reads the whole body, timing the first byte.
async fn fetch(req: reqwest::RequestBuilder) -> reqwest::Result<Answer> {
    let started = Instant::now();
    let mut resp = req.send().await?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut answer = Answer {
        status: resp.status().as_u16(),
        provider: header(crate::proxy::X_PROVIDER),
        model: header(crate::proxy::X_MODEL),
        ..Answer::default()
    };
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if answer.first_byte.is_none() {
            answer.first_byte = Some(started.elapsed());
        }
        body.extend_from_slice(&chunk);
    }
    answer.elapsed = started.elapsed();
    answer.body = String::from_utf8_lossy(&body).into_owned();
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            provider: Some("groq".into()),
            model: Some("llama".into()),
            body: body.into(),
            elapsed: Duration::from_millis(42),
            first_byte: Some(Duration::from_millis(7)),
        }
    }

    fn detail(v: Verdict) -> String {
        match v {
            Verdict::Ok(d) | Verdict::Fail(d) => d,
        }
    }

    fn chunk(rest: &str) -> String {
        format!(r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",{rest}}}"#)
    }

    const COMPLETION: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"OK"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

    #[test]
    fn verdict_lines_line_up_ok_and_fail() {
        let ok = Step {
            name: "chat",
            verdict: Verdict::Ok("fine".into()),
        };
        let fail = Step {
            name: "models",
            verdict: Verdict::Fail("broken".into()),
        };
        assert_eq!(verdict_line(&ok), "ok    chat    fine");
        assert_eq!(verdict_line(&fail), "FAIL  models  broken");
    }

    #[test]
    fn the_summary_passes_only_when_every_check_did() {
        let step = |name, ok: bool| Step {
            name,
            verdict: if ok {
                Verdict::Ok(String::new())
            } else {
                Verdict::Fail(String::new())
            },
        };
        let url = "http://localhost:8000/v1";
        let all = [step("models", true), step("chat", true)];
        assert_eq!(
            summary(&all, url),
            Ok(format!(
                "all 2 checks passed: point the app at {url} with model \"auto\""
            ))
        );
        let some = [
            step("models", true),
            step("chat", false),
            step("stream", false),
        ];
        assert_eq!(
            summary(&some, url),
            Err("2 of 3 checks failed (chat, stream)".into())
        );
    }

    #[test]
    fn a_failure_quotes_the_instances_error_message() {
        let body = r#"{"error":{"message":"all 1 providers failed: a: HTTP 500","type":"server_error","code":"all_failed"}}"#;
        assert_eq!(
            failure_detail(502, body),
            "HTTP 502: all 1 providers failed: a: HTTP 500"
        );
        assert_eq!(failure_detail(500, "oops"), "HTTP 500: oops");
        assert_eq!(failure_detail(500, ""), "HTTP 500 with an empty body");
    }

    #[test]
    fn the_model_list_reports_its_size_and_time() {
        let v = models_verdict(&answer(
            200,
            r#"{"object":"list","data":[{"id":"auto","object":"model"},{"id":"m1","object":"model"}]}"#,
        ));
        assert_eq!(
            v,
            Verdict::Ok("GET /v1/models: 2 models in 42 ms (auto, m1)".into())
        );
        assert!(!models_verdict(&answer(200, r#"{"data":[]}"#)).passed());
        let d = detail(models_verdict(&answer(
            200,
            r#"{"object":"list","data":[{}]}"#,
        )));
        assert!(d.ends_with("response: data[0].id is missing"), "{d}");
    }

    #[test]
    fn a_good_completion_names_the_provider_and_quotes_the_reply() {
        let v = completion_verdict(&answer(200, COMPLETION));
        assert_eq!(
            v,
            Verdict::Ok("answered by groq (llama) in 42 ms: \"OK\"".into())
        );
    }

    #[test]
    fn a_completion_a_strict_client_cannot_decode_fails_naming_the_field() {
        let body = COMPLETION.replace(r#""total_tokens":2"#, r#""total_tokens":2.5"#);
        let d = detail(completion_verdict(&answer(200, &body)));
        assert!(
            d.contains("cannot decode the answer: response: usage.total_tokens"),
            "{d}"
        );
    }

    #[test]
    fn a_good_stream_reports_first_byte_provider_and_usage() {
        let body = format!(
            "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            chunk(r#""choices":[{"index":0,"delta":{"content":"OK"}}]"#),
            chunk(
                r#""choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}"#
            ),
        );
        let v = stream_verdict(&answer(200, &body));
        assert_eq!(
            v,
            Verdict::Ok(
                "answered by groq (llama): first byte after 7 ms, 3 events, usage chunk: yes: \"OK\""
                    .into()
            )
        );
    }

    #[test]
    fn a_stream_without_done_or_with_an_error_event_fails() {
        let body = format!(
            "data: {}\n\n",
            chunk(r#""choices":[{"index":0,"delta":{"content":"OK"}}]"#)
        );
        let d = detail(stream_verdict(&answer(200, &body)));
        assert!(d.contains("without `data: [DONE]`"), "{d}");
        let body =
            "data: {\"error\":{\"message\":\"provider went away\",\"type\":\"server_error\"}}\n\n";
        let d = detail(stream_verdict(&answer(200, body)));
        assert!(
            d.ends_with("the stream ended with an error: provider went away"),
            "{d}"
        );
    }

    #[test]
    fn long_text_is_shortened_on_a_character_boundary() {
        assert_eq!(shorten("héllo", 2), "hé...");
        assert_eq!(shorten("hi", 2), "hi");
    }
}
