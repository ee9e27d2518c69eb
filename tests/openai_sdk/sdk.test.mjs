// The official OpenAI Node SDK against a glimpse gateway: what applications actually run.
// GLIMPSE_GATEWAY_URL (http://host:port/v1) and GLIMPSE_API_KEY come from
// tools/openai_sdk_test.sh, which starts a replica and a gateway with an API key file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const baseURL = process.env.GLIMPSE_GATEWAY_URL;
const apiKey = process.env.GLIMPSE_API_KEY;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const model = 'tinycode-4m-f16';
const refs = readFileSync('tests/data/refs/greedy_short.jsonl', 'utf8')
  .trim().split('\n').map((line) => JSON.parse(line));

test('completions reproduce llama.cpp greedy output', async () => {
  const ref = refs[0];
  const r = await client.completions.create({
    model, prompt: ref.prompt_tokens, max_tokens: ref.tokens.length, temperature: 0,
    ignore_eos: true,
  });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].text, ref.text);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, ref.tokens.length);
  assert.equal(r.usage.prompt_tokens, ref.prompt_tokens.length);
});

test('streamed completions concatenate to the non-streamed text', async () => {
  const ref = refs[1];
  const stream = await client.completions.create({
    model, prompt: ref.prompt_tokens, max_tokens: 24, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  const whole = await client.completions.create({
    model, prompt: ref.prompt_tokens, max_tokens: 24, temperature: 0,
  });
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
});

test('chat completions, streamed and not, with n > 1', async () => {
  const messages = [
    { role: 'system', content: 'You write Python.' },
    { role: 'user', content: 'def fibonacci(n):' },
  ];
  const r = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, n: 2 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 2);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, r.choices[1].message.content);
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 12, temperature: 0, stream: true,
  });
  let content = '';
  let role = null;
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta ?? {};
    if (delta.role) role = delta.role;
    if (delta.content) content += delta.content;
  }
  assert.equal(role, 'assistant');
  assert.equal(content, r.choices[0].message.content);
});

test('stop strings end the output before the stop', async () => {
  const ref = refs[0];
  const stop = ref.text.slice(10, 16);
  const r = await client.completions.create({
    model, prompt: ref.prompt_tokens, max_tokens: ref.tokens.length, temperature: 0, stop: [stop],
  });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(!r.choices[0].text.includes(stop));
  assert.ok(ref.text.startsWith(r.choices[0].text));
});

test('logprobs come back for every token', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'import os' }], max_tokens: 5, temperature: 0,
    logprobs: true, top_logprobs: 2,
  });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, r.usage.completion_tokens);
  for (const t of lp) {
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 2);
    assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
  }
});

test('models lists the served model', async () => {
  const models = await client.models.list();
  assert.equal(models.data[0].id, model);
});

test('errors surface as the SDK error classes', async () => {
  await assert.rejects(
    client.completions.create({ model, prompt: 'x', max_tokens: -1 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400);
  await assert.rejects(
    client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 2 }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
  await assert.rejects(
    client.completions.create({ model, prompt: Array(600).fill(100), max_tokens: 4 }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
  const wrongKey = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(
    wrongKey.completions.create({ model, prompt: 'x', max_tokens: 2 }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});
