"""The dashboard in real headless Chromium (Debian's, driven by Playwright), against a
running llm-rotator: run by tests/it/dashboard.rs, never by hand in CI.

    dashboard_check.py BASE_URL SCREENSHOT_DIR KEY... [--token TOKEN]

Without --token (alpha cooling after a 429 with retry-after 60, beta answering): the CSP
header, a row per provider, alpha's cooldown counting down, a switch click that /status
agrees with, charts with data points, the last requests, polls that find nothing changed
answered 304, /metrics read by prometheus_client's parser, no piece of a key anywhere and
no console error. With --token: the page asks for the token, keeps it in sessionStorage
only, and then shows the providers. Prints "dashboard: ok" / "dashboard token: ok".
"""

import json
import os
import re
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright
from prometheus_client.parser import text_string_to_metric_families

args = sys.argv[1:]
token = None
if "--token" in args:
    i = args.index("--token")
    token = args[i + 1]
    del args[i : i + 2]
base, shots, *keys = args
os.makedirs(shots, exist_ok=True)


def api(path, method="GET"):
    req = urllib.request.Request(base + path, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def enabled(name):
    status = json.loads(api("/status"))
    return next(p for p in status["providers"] if p["name"] == name)["enabled"]


def wait_for(cond, what, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def no_piece_of_a_key(text, where):
    for key in keys:
        for i in range(len(key) - 4):
            piece = key[i : i + 5]
            assert piece not in text, f"{piece!r} of a key in {where}"


def seconds(text):
    parts = [int(p) for p in text.strip().split(":")]
    total = 0
    for p in parts:
        total = total * 60 + p
    return total


errors = []
responses = []

with sync_playwright() as pw:
    browser = pw.chromium.launch(
        executable_path=os.environ.get("LLM_ROTATOR_CHROMIUM", "/usr/bin/chromium"),
        args=["--no-sandbox", "--disable-gpu"],
    )
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: responses.append((time.time(), r.url, r.status)))

    resp = page.goto(base + "/ui")
    assert resp.status == 200, resp.status
    csp = resp.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "default-src 'none'" in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp

    if token:
        page.wait_for_selector("#login:not([hidden])", timeout=10000)
        page.screenshot(path=os.path.join(shots, "dashboard-token.png"))
        page.fill("#token", token)
        page.click("#login-form button")
        page.wait_for_selector("#providers tbody tr[data-provider=alpha]", timeout=10000)
        stored = page.evaluate("sessionStorage.getItem('llm-rotator-token')")
        assert stored == token, stored
        assert page.evaluate("localStorage.length") == 0, "the token is not kept beyond the tab"
        assert page.is_hidden("#login")
        # The only console errors allowed: the 401 that made the page ask.
        unexpected = [e for e in errors if "401" not in e]
        assert not unexpected, unexpected
        browser.close()
        print("dashboard token: ok")
        sys.exit(0)

    # Rows for every provider.
    page.wait_for_selector("#providers tbody tr[data-provider=alpha]", timeout=10000)
    names = page.eval_on_selector_all("#providers tbody tr", "rows => rows.map(r => r.dataset.provider)")
    assert names == ["alpha", "beta"], names
    assert "cooling down" in page.inner_text("tr[data-provider=alpha] td.state")
    assert page.inner_text("tr[data-provider=beta] td.today").strip() == "3"

    # alpha's cooldown counts down in the browser.
    cd = "tr[data-provider=alpha] .countdown"
    first = seconds(page.inner_text(cd))
    assert 40 <= first <= 60, first
    page.wait_for_timeout(2200)
    second = seconds(page.inner_text(cd))
    assert 1 <= first - second <= 4, (first, second)

    # Charts with data points (beta's three requests, alpha's 429).
    page.wait_for_selector(".chart[data-chart=requests] circle.pt", timeout=10000)
    points = page.eval_on_selector_all(".chart[data-chart=requests] circle.pt", "c => c.length")
    assert points >= 1, points
    assert page.eval_on_selector_all(".chart[data-chart=rate_limited] circle.pt", "c => c.length") >= 1
    assert page.eval_on_selector_all(".chart svg path.series", "p => p.length") >= 4

    # The last requests.
    rows = page.eval_on_selector_all("#recent tbody tr", "r => r.length")
    assert rows == 3, rows
    assert "alpha → beta" in page.inner_text("#recent tbody tr:last-child")

    page.screenshot(path=os.path.join(shots, "dashboard.png"), full_page=True)

    # Nothing changed: the polls of the next 3 s are bodiless 304s, at most one a second.
    # (Playwright hands over events while it waits, not during time.sleep.)
    page.wait_for_timeout(1500)
    start = time.time()
    page.wait_for_timeout(3000)
    polls = [s for (t, u, s) in responses if t >= start and u.endswith("/ui/api/state")]
    assert 1 <= len(polls) <= 4, polls
    assert all(s == 304 for s in polls), polls

    # A switch: off, and /status agrees; then on again.
    page.click("tr[data-provider=beta] input.toggle")
    wait_for(lambda: not enabled("beta"), "beta switched off in /status")
    page.wait_for_function(
        "() => document.querySelector('tr[data-provider=beta] td.state').textContent === 'off'",
        timeout=10000,
    )
    page.screenshot(path=os.path.join(shots, "dashboard-beta-off.png"), full_page=True)
    page.click("tr[data-provider=beta] input.toggle")
    wait_for(lambda: enabled("beta"), "beta switched on in /status")
    page.wait_for_function(
        "() => document.querySelector('tr[data-provider=beta] td.state').textContent === 'ready'",
        timeout=10000,
    )

    # The page and everything it loaded carry no piece of a key.
    no_piece_of_a_key(page.content(), "the page")
    no_piece_of_a_key(api("/ui/api/state"), "/ui/api/state")

    assert not errors, errors
    browser.close()

# /metrics through the reference parser.
text = api("/metrics")
no_piece_of_a_key(text, "/metrics")
families = {f.name: f for f in text_string_to_metric_families(text)}
requests = families["llm_rotator_requests"]
ok = [
    s
    for s in requests.samples
    if s.labels.get("provider") == "beta" and s.labels.get("outcome") == "ok"
]
assert sum(s.value for s in ok) == 3, ok
rotations = families["llm_rotator_rotations"].samples
assert any(s.labels == {"reason": "rate_limited"} and s.value == 1 for s in rotations), rotations
state = families["llm_rotator_provider_state"].samples
assert any(
    s.labels == {"provider": "alpha", "state": "cooling_down"} and s.value == 1 for s in state
), state
assert families["llm_rotator_request_duration_seconds"].type == "histogram"
assert re.search(r'llm_rotator_build_info\{version="', text)

print("dashboard: ok")
