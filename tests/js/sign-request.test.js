// @ts-check
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { AgentError } from "../../extension/lib/agent.js";
import { b64ToBytes, bytesToB64, sha256Hex } from "../../extension/lib/bytes.js";
import { withPageOrigin } from "../../extension/lib/compat-frames.js";
import { MAX_DATA_BYTES, prepareSign } from "../../extension/lib/sign-request.js";

const ORIGIN = "https://www.singlewindow.cn";

/**
 * @param {Promise<unknown>} promise
 * @param {string} code
 */
async function rejectsWith(promise, code) {
  await assert.rejects(promise, (err) => err instanceof AgentError && err.code === code);
}

test("bytes: Base64 both ways, SHA-256 as node computes it", async () => {
  const bytes = new Uint8Array(70000).map((_, i) => i % 251);
  assert.deepEqual(b64ToBytes(bytesToB64(bytes)), bytes);
  assert.throws(() => b64ToBytes("not base64!"));
  assert.throws(() => b64ToBytes("YWJj="));
  assert.equal(await sha256Hex(bytes), createHash("sha256").update(bytes).digest("hex"));
});

test("a text document: hashed and shown as the visitor will see it", async () => {
  const request = await prepareSign(ORIGIN, { purpose: "agreement", title: "  网上协议 ", text: "协议正文" });
  const utf8 = Buffer.from("协议正文", "utf8");
  assert.deepEqual(request, {
    origin: ORIGIN,
    purpose: "agreement",
    purposeText: "签署网上协议",
    title: "网上协议",
    size: utf8.length,
    sha256: createHash("sha256").update(utf8).digest("hex"),
    data: utf8.toString("base64"),
    preview: "协议正文",
  });
});

test("a binary document: no preview", async () => {
  const request = await prepareSign(ORIGIN, { purpose: "seal", title: "印章", data: Buffer.from([1, 2, 3]).toString("base64") });
  assert.equal(request.size, 3);
  assert.equal(request.preview, null);
});

test("every bad request is refused before any window opens", async () => {
  await rejectsWith(prepareSign(ORIGIN, null), "invalid_input");
  await rejectsWith(prepareSign(ORIGIN, { purpose: "digest", title: "t", text: "x" }), "invalid_input");
  await rejectsWith(prepareSign(ORIGIN, { purpose: "seal", title: " ", text: "x" }), "invalid_input");
  await rejectsWith(prepareSign(ORIGIN, { purpose: "seal", title: "t".repeat(201), text: "x" }), "invalid_input");
  await rejectsWith(prepareSign(ORIGIN, { purpose: "seal", title: "t", text: "x", data: "eA==" }), "invalid_input");
  await rejectsWith(prepareSign(ORIGIN, { purpose: "seal", title: "t" }), "invalid_input");
  await rejectsWith(prepareSign(ORIGIN, { purpose: "seal", title: "t", text: "" }), "invalid_input");
  await rejectsWith(prepareSign(ORIGIN, { purpose: "seal", title: "t", data: "%%%%" }), "invalid_input");
  const tooBig = Buffer.alloc(MAX_DATA_BYTES + 1).toString("base64");
  await rejectsWith(prepareSign(ORIGIN, { purpose: "seal", title: "t", data: tooBig }), "payload_too_large");
  await rejectsWith(prepareSign(ORIGIN, { purpose: "seal", title: "t", text: "x".repeat(MAX_DATA_BYTES + 1) }), "payload_too_large");
});

test("the largest document the agent takes is accepted", async () => {
  const request = await prepareSign(ORIGIN, { purpose: "seal", title: "t", data: Buffer.alloc(MAX_DATA_BYTES).toString("base64") });
  assert.equal(request.size, MAX_DATA_BYTES);
});

test("bridge frames: signing requests get the page's origin as their title", () => {
  const sign = JSON.stringify({ _method: "cus-sec_SpcSignDataAsPEM", _id: 3, args: { inData: "x", passwd: "88888888" } });
  assert.deepEqual(JSON.parse(withPageOrigin(sign, ORIGIN)).args, {
    inData: "x",
    passwd: "88888888",
    title: `SpcSignDataAsPEM（${ORIGIN}）`,
  });
  const random = JSON.stringify({ _method: "cus-sec_SpcSignRandom", _id: 4, args: { random: "AB" } });
  assert.equal(JSON.parse(withPageOrigin(random, ORIGIN)).args.title, `SpcSignRandom（${ORIGIN}）`);
  const titled = JSON.stringify({ _method: "cus-sec_SpcSignData", _id: 5, args: { inData: "x", title: "mine" } });
  assert.equal(withPageOrigin(titled, ORIGIN), titled);
  for (const untouched of [
    JSON.stringify({ _method: "cus-sec_SpcGetCardID", _id: 1, args: {} }),
    JSON.stringify({ _method: "cus-sec_SpcSignData", _id: 6 }),
    "BLOCKTXT0000000000000000",
    "{not json",
    "null",
  ]) {
    assert.equal(withPageOrigin(untouched, ORIGIN), untouched);
  }
});
