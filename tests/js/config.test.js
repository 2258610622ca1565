// @ts-check
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  DEFAULTS,
  PRACTICE_ORIGIN,
  SINGLE_WINDOW_ORIGINS,
  cleanSettings,
  isExactOrigin,
  isLoopbackUrl,
  loadConfig,
} from "../../extension/lib/config.js";
import { manifestOrigins } from "../../extension/lib/content-scripts.js";
import { installChrome } from "./chrome-stub.js";

const manifest = JSON.parse(readFileSync(new URL("../../extension/manifest.json", import.meta.url), "utf8"));
const schema = JSON.parse(readFileSync(new URL("../../extension/managed_schema.json", import.meta.url), "utf8"));

test("exact origins only", () => {
  for (const ok of ["https://www.singlewindow.cn", "http://localhost:17380", "http://[::1]:8080"]) {
    assert.ok(isExactOrigin(ok), ok);
  }
  for (const bad of ["https://www.singlewindow.cn/", "https://*.singlewindow.cn", "HTTPS://X.CN", "ftp://x", "", 5, null]) {
    assert.equal(isExactOrigin(bad), false, String(bad));
  }
});

test("the agent by IP on loopback, never as localhost, no path", () => {
  assert.ok(isLoopbackUrl("http://127.0.0.1:17321", ["http:"]));
  assert.ok(isLoopbackUrl("http://[::1]:17321/", ["http:"]));
  for (const bad of ["http://localhost:17321", "http://10.0.0.1:17321", "http://127.0.0.1:17321/v1", "https://127.0.0.1:1", "x"]) {
    assert.equal(isLoopbackUrl(bad, ["http:"]), false, bad);
  }
  assert.ok(isLoopbackUrl("ws://127.0.0.1:61232", ["ws:"]));
  assert.equal(isLoopbackUrl("ws://127.0.0.1:61232", ["http:"]), false);
});

test("cleanSettings keeps what is valid and drops the rest", () => {
  assert.deepEqual(
    cleanSettings({
      agentUrl: "http://127.0.0.1:1234/",
      compatUrl: "ws://localhost:61232",
      pageOrigins: ["https://a.example", "https://*.bad", 7],
      keypad: "sometimes",
      dialogTimeoutS: 5000,
      clientName: "  kiosk 7  ",
    }),
    { agentUrl: "http://127.0.0.1:1234", pageOrigins: ["https://a.example"], dialogTimeoutS: 900, clientName: "kiosk 7" },
  );
  assert.deepEqual(cleanSettings({ dialogTimeoutS: 10 }), {});
  assert.deepEqual(cleanSettings("nonsense"), {});
  assert.deepEqual(cleanSettings(null), {});
});

test("policy wins over local settings, which win over the defaults", async () => {
  installChrome(
    { settings: { agentUrl: "http://127.0.0.1:1111", keypad: "off", compatUrl: "ws://127.0.0.1:2222" } },
    { agentUrl: "http://127.0.0.1:3333", compatUrl: "not a url" },
  );
  const config = await loadConfig();
  assert.equal(config.agentUrl, "http://127.0.0.1:3333");
  assert.equal(config.compatUrl, "ws://127.0.0.1:2222"); // the policy's was invalid
  assert.equal(config.keypad, "off");
  assert.deepEqual(config.pageOrigins, DEFAULTS.pageOrigins);
});

test("the manifest's content scripts cover exactly the built-in origins", () => {
  assert.deepEqual([...manifestOrigins(manifest)].sort(), [PRACTICE_ORIGIN, ...SINGLE_WINDOW_ORIGINS].sort());
  assert.deepEqual([...DEFAULTS.bridgeOrigins].sort(), [PRACTICE_ORIGIN, ...SINGLE_WINDOW_ORIGINS].sort());
});

test("the policy schema describes every setting and the defaults satisfy it", () => {
  assert.deepEqual(Object.keys(schema.properties).sort(), Object.keys(DEFAULTS).sort());
  for (const [key, value] of Object.entries(DEFAULTS)) {
    const type = schema.properties[key].type;
    assert.equal(Array.isArray(value) ? "array" : typeof value === "number" ? "integer" : typeof value, type, key);
  }
});
