// @ts-check
import assert from "node:assert/strict";
import { test } from "node:test";

import { DYNAMIC_IDS, dynamicScripts, manifestOrigins, sameRegistrations } from "../../extension/lib/content-scripts.js";

const STATIC = new Set(["https://www.singlewindow.cn", "http://localhost:17380"]);

test("manifestOrigins reads the origins of plain origin/* patterns", () => {
  const origins = manifestOrigins({
    content_scripts: [{ matches: ["https://www.singlewindow.cn/*", "http://localhost:17380/*"] }, { matches: ["<all_urls>"] }],
  });
  assert.deepEqual([...origins], ["https://www.singlewindow.cn", "http://localhost:17380"]);
  assert.deepEqual([...manifestOrigins({})], []);
});

test("only origins the manifest does not cover are registered at run time", () => {
  const scripts = dynamicScripts(
    {
      pageOrigins: ["https://www.singlewindow.cn", "http://localhost:5000"],
      bridgeOrigins: ["https://www.singlewindow.cn", "https://extra.example", "http://localhost:5000"],
    },
    STATIC,
  );
  assert.deepEqual(
    scripts.map((s) => [s.id, s.world, s.matches]),
    [
      [DYNAMIC_IDS.isolated, "ISOLATED", ["http://localhost:5000/*", "https://extra.example/*"]],
      [DYNAMIC_IDS.bridge, "MAIN", ["http://localhost:5000/*", "https://extra.example/*"]],
    ],
  );
  assert.ok(scripts.every((s) => s.runAt === "document_start" && s.allFrames && s.persistAcrossSessions));
});

test("nothing to register when the manifest covers every configured origin", () => {
  assert.deepEqual(dynamicScripts({ pageOrigins: ["https://www.singlewindow.cn"], bridgeOrigins: [] }, STATIC), []);
});

test("a page-only origin gets the isolated script but no socket wrapper", () => {
  const scripts = dynamicScripts({ pageOrigins: ["http://localhost:5000"], bridgeOrigins: [] }, STATIC);
  assert.deepEqual(scripts.map((s) => s.id), [DYNAMIC_IDS.isolated]);
});

test("sameRegistrations: order does not matter, any difference does", () => {
  const wanted = dynamicScripts({ pageOrigins: ["http://localhost:5000", "http://localhost:6000"], bridgeOrigins: [] }, STATIC);
  const registered = wanted.map((s) => ({ ...s, matches: [...s.matches].reverse() }));
  assert.ok(sameRegistrations(registered, wanted));
  assert.ok(sameRegistrations([], []));
  assert.equal(sameRegistrations([], wanted), false);
  assert.equal(sameRegistrations([{ ...wanted[0], world: "MAIN" }], wanted), false);
  assert.equal(sameRegistrations([{ ...wanted[0], matches: ["http://localhost:5000/*"] }], wanted), false);
});
