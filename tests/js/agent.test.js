// @ts-check
// lib/agent.js against a real HTTP server on 127.0.0.1 (node's fetch plays Chromium's).
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { AgentError, agent, call, getToken } from "../../extension/lib/agent.js";
import { installChrome } from "./chrome-stub.js";

/** @type {{method?: string, url?: string, headers: import("node:http").IncomingHttpHeaders, body: string}[]} */
const seen = [];
/** @type {(url: string) => [number, unknown]} */
let answer = () => [200, {}];
const server = createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    seen.push({ method: req.method, url: req.url, headers: req.headers, body });
    const [status, payload] = answer(req.url ?? "");
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(payload === undefined ? "not json" : JSON.stringify(payload));
  });
});
let base = "";

before(async () => {
  await new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve(undefined));
  });
  const address = server.address();
  assert.ok(address && typeof address === "object");
  base = `http://127.0.0.1:${address.port}`;
});
after(() => server.close());

test("a token call sends the bearer token, JSON and nothing the page could add", async () => {
  installChrome({ token: "t0k3n", settings: { agentUrl: base } });
  seen.length = 0;
  answer = () => [200, { signature: "AAA=" }];
  const result = await agent.sign({ purpose: "seal", title: "t", data: "eA==" });
  assert.deepEqual(result, { signature: "AAA=" });
  assert.equal(seen[0].method, "POST");
  assert.equal(seen[0].url, "/v1/sign");
  assert.equal(seen[0].headers.authorization, "Bearer t0k3n");
  assert.equal(seen[0].headers["content-type"], "application/json");
  assert.deepEqual(JSON.parse(seen[0].body), { purpose: "seal", title: "t", data: "eA==" });
});

test("no token: not_paired, and nothing is sent", async () => {
  installChrome({ settings: { agentUrl: base } });
  seen.length = 0;
  await assert.rejects(agent.card(), (err) => err instanceof AgentError && err.code === "not_paired");
  assert.equal(seen.length, 0);
});

test("the agent's error code and details come through; a revoked token is forgotten", async () => {
  const areas = installChrome({ token: "old", settings: { agentUrl: base } });
  answer = () => [422, { error: { code: "pin_incorrect", message: "wrong", details: { tries_left: 4 } } }];
  await assert.rejects(agent.verifyPin("12345678", false), (err) => {
    assert.ok(err instanceof AgentError);
    assert.deepEqual([err.code, err.details, err.status], ["pin_incorrect", { tries_left: 4 }, 422]);
    return true;
  });
  assert.equal(await getToken(), "old");
  answer = () => [401, { error: { code: "unauthorized", message: "revoked" } }];
  await assert.rejects(agent.card(), (err) => err instanceof AgentError && err.code === "unauthorized");
  assert.equal(areas.local.token, undefined);
});

test("an answer without the agent's error shape becomes http_<status>", async () => {
  installChrome({ token: "t", settings: { agentUrl: base } });
  answer = () => [502, undefined];
  await assert.rejects(call("GET", "/v1/card"), (err) => err instanceof AgentError && err.code === "http_502");
});

test("no agent listening: agent_unreachable", async () => {
  const closed = createServer();
  await new Promise((resolve) => {
    closed.listen(0, "127.0.0.1", () => resolve(undefined));
  });
  const address = closed.address();
  assert.ok(address && typeof address === "object");
  await new Promise((resolve) => {
    closed.close(() => resolve(undefined));
  });
  installChrome({ settings: { agentUrl: `http://127.0.0.1:${address.port}` } });
  await assert.rejects(agent.status(), (err) => err instanceof AgentError && err.code === "agent_unreachable");
});
