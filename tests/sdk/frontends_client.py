"""Drives llm-rotator's other front-ends with the official SDKs, as real apps would:
the OpenAI SDK's Responses API and embeddings, and the Anthropic SDK's Messages API
(create and stream; text, a tool round trip, thinking). The mock providers behind the
agent answer in the order of the calls below (see tests/it/sdk.rs).

Usage: python frontends_client.py BASE_URL   (BASE_URL without /v1)
Exits non-zero (with the reason) if anything an app relies on does not hold.
"""
import json
import sys

import anthropic
from openai import OpenAI, RateLimitError

base = sys.argv[1]
oai = OpenAI(base_url=base + "/v1", api_key="unused-by-llm-rotator", max_retries=0)
ant = anthropic.Anthropic(base_url=base, api_key="unused-by-llm-rotator", max_retries=0)

weather = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

# 1. Responses, not streamed, through the rotation (the first provider answers 429).
raw = oai.responses.with_raw_response.create(model="auto", input="Say hi", store=False)
r = raw.parse()
assert r.output_text == "hello from responses", r
assert raw.headers["x-provider"] == "beta", dict(raw.headers)
assert r.usage.total_tokens == 12, r.usage

# 2. Responses, streamed: the SDK decodes every event.
text = []
done = None
with oai.responses.stream(model="auto", input="Count", store=False) as stream:
    for event in stream:
        if event.type == "response.output_text.delta":
            text.append(event.delta)
    done = stream.get_final_response()
assert "".join(text) == "one two", text
assert done.status == "completed", done

# 3. A tool call round trip.
first = oai.responses.create(model="auto", input="Weather in Paris?", tools=[weather])
calls = [o for o in first.output if o.type == "function_call"]
assert calls and calls[0].name == "get_weather", first.output
assert json.loads(calls[0].arguments) == {"city": "Paris"}, calls[0].arguments
second = oai.responses.create(
    model="auto",
    tools=[weather],
    input=[
        {"role": "user", "content": "Weather in Paris?"},
        {
            "type": "function_call",
            "call_id": calls[0].call_id,
            "name": "get_weather",
            "arguments": calls[0].arguments,
        },
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ],
)
assert second.output_text == "It is sunny", second

# 4. Embeddings.
emb = oai.embeddings.create(model="auto", input=["hello", "world"])
assert len(emb.data[0].embedding) == 4, emb

# 5. Messages, not streamed.
m = ant.messages.create(
    model="claude-opus-4-8",
    max_tokens=64,
    system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    messages=[{"role": "user", "content": "Say hi"}],
)
assert m.content[0].type == "text" and m.content[0].text == "hello from messages", m
assert m.stop_reason == "end_turn", m
assert m.usage.output_tokens == 7, m.usage

# 6. Messages, streamed, with thinking.
with ant.messages.stream(
    model="claude-opus-4-8",
    max_tokens=2048,
    thinking={"type": "enabled", "budget_tokens": 1024},
    messages=[{"role": "user", "content": "2+2?"}],
) as stream:
    final = stream.get_final_message()
kinds = [b.type for b in final.content]
assert kinds == ["thinking", "text"], final.content
assert final.content[0].thinking == "Two plus two", final.content
assert final.content[1].text == "4", final.content

# 7. Tool use and its result.
tools = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": weather["parameters"],
    }
]
asked = ant.messages.create(
    model="claude-opus-4-8",
    max_tokens=256,
    tools=tools,
    messages=[{"role": "user", "content": "Weather in Paris?"}],
)
uses = [b for b in asked.content if b.type == "tool_use"]
assert asked.stop_reason == "tool_use" and uses, asked
assert uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"}, uses
answered = ant.messages.create(
    model="claude-opus-4-8",
    max_tokens=256,
    tools=tools,
    messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": asked.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}],
        },
    ],
)
assert answered.content[0].text == "It is sunny", answered

# 8. Everything that could serve is cooling down: each SDK sees its own rate-limit error.
try:
    oai.responses.create(model="alpha-model", input="x")
    raise SystemExit("expected a 429 from /v1/responses")
except RateLimitError as e:
    assert e.response.headers.get("retry-after"), dict(e.response.headers)
try:
    ant.messages.create(
        model="alpha-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    raise SystemExit("expected a 429 from /v1/messages")
except anthropic.RateLimitError as e:
    assert e.response.headers.get("retry-after"), dict(e.response.headers)
    assert e.body["error"]["type"] == "rate_limit_error", e.body

print("front-end sdks: ok")
