"""Drives llm-rotator with the official OpenAI Python SDK, as a real app would.

Usage: python openai_client.py BASE_URL
Exits non-zero (with the reason) if anything an app relies on does not hold.
"""
import sys

from openai import OpenAI, RateLimitError

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="unused-by-llm-rotator", max_retries=0)

# Non-streaming, through the rotation (the first provider answers 429).
raw = client.chat.completions.with_raw_response.create(
    model="auto", messages=[{"role": "user", "content": "Say hi"}]
)
completion = raw.parse()
assert completion.choices[0].message.content == "hello from the sdk test", completion
assert raw.headers["x-provider"] == "beta", dict(raw.headers)
assert completion.usage.total_tokens == 12, completion.usage

# Streaming.
stream = client.chat.completions.create(
    model="auto", messages=[{"role": "user", "content": "Count"}], stream=True
)
parts = []
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
assert "".join(parts) == "one two three", parts

# The model list.
ids = [m.id for m in client.models.list()]
assert ids[0] == "auto" and "beta-model" in ids, ids

# When everything is cooling down the SDK sees a proper rate-limit error.
try:
    client.chat.completions.create(
        model="alpha-model", messages=[{"role": "user", "content": "x"}]
    )
    raise SystemExit("expected a 429 for a model only the cooling provider serves")
except RateLimitError as e:
    assert e.response.headers.get("retry-after"), dict(e.response.headers)
    assert e.body["code"] == "rate_limit_exceeded", e.body

print("openai sdk: ok")
