// @ts-check
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  PAGE_METHODS,
  cardEvent,
  closeCode,
  pageMethod,
  parseDialogCommand,
  parsePopupMessage,
  parsePortMessage,
  parseSocketCommand,
} from "../../extension/lib/wire.js";

test("page port: hello, calls, and nothing else", () => {
  assert.deepEqual(parsePortMessage({ id: "hello-1", method: "hello" }), { id: "hello-1", method: "hello" });
  assert.deepEqual(parsePortMessage({ id: "r-2", method: "sign", params: { a: 1 } }), {
    id: "r-2",
    method: "sign",
    params: { a: 1 },
  });
  for (const bad of [null, "x", [], {}, { id: "", method: "ping" }, { id: 5, method: "ping" }, { id: "r", method: 1 }]) {
    assert.equal(parsePortMessage(bad), null, JSON.stringify(bad));
  }
  assert.equal(parsePortMessage({ id: "x".repeat(81), method: "ping" }), null);
  assert.equal(parsePortMessage({ id: "r", method: "m".repeat(33) }), null);
});

test("page methods are exactly the documented ones", () => {
  assert.deepEqual([...PAGE_METHODS], ["ping", "status", "pair", "card", "certificates", "pinStatus", "sign", "endSession"]);
  assert.equal(pageMethod("sign"), "sign");
  assert.equal(pageMethod("constructor"), null);
  assert.equal(pageMethod("__proto__"), null);
});

test("bridge port: open, send, close with a code a script may use", () => {
  assert.deepEqual(parseSocketCommand({ type: "open", url: "wss://wss.singlewindow.cn:61231/" }), {
    type: "open",
    url: "wss://wss.singlewindow.cn:61231/",
  });
  assert.equal(parseSocketCommand({ type: "open", url: "x".repeat(2049) }), null);
  assert.deepEqual(parseSocketCommand({ type: "send", data: "BLOCKTXT..." }), { type: "send", data: "BLOCKTXT..." });
  assert.equal(parseSocketCommand({ type: "send", data: 42 }), null);
  assert.deepEqual(parseSocketCommand({ type: "close", code: 4001, reason: "bye" }), {
    type: "close",
    code: 4001,
    reason: "bye",
  });
  assert.deepEqual(parseSocketCommand({ type: "close", code: 1011, reason: "r".repeat(200) }), {
    type: "close",
    code: 1000,
    reason: "r".repeat(123),
  });
  assert.equal(parseSocketCommand({ type: "opened" }), null);
  assert.equal(parseSocketCommand(null), null);
});

test("closeCode: 1000 or 3000-4999, else a normal close", () => {
  assert.equal(closeCode(1000), 1000);
  assert.equal(closeCode(3000), 3000);
  assert.equal(closeCode(4999), 4999);
  for (const code of [999, 1001, 1006, 2999, 5000, 3000.5, "3000", undefined]) assert.equal(closeCode(code), 1000);
});

test("dialog port: the window's commands; a cancel carries only known codes", () => {
  const known = (/** @type {string} */ code) => code === "card_removed";
  assert.deepEqual(parseDialogCommand({ type: "get", id: "abc" }, known), { type: "get", id: "abc" });
  assert.deepEqual(parseDialogCommand({ type: "done", id: "abc", result: { x: 1 } }, known), {
    type: "done",
    id: "abc",
    result: { x: 1 },
  });
  assert.deepEqual(parseDialogCommand({ type: "cancel", id: "abc", code: "card_removed" }, known), {
    type: "cancel",
    id: "abc",
    code: "card_removed",
  });
  assert.deepEqual(parseDialogCommand({ type: "cancel", id: "abc", code: "anything" }, known), {
    type: "cancel",
    id: "abc",
    code: "user_cancelled",
  });
  assert.equal(parseDialogCommand({ type: "get" }, known), null);
  assert.equal(parseDialogCommand({ type: "steal", id: "abc" }, known), null);
});

test("popup messages and card events", () => {
  assert.deepEqual(parsePopupMessage({ type: "pair" }), { type: "pair" });
  assert.equal(parsePopupMessage({ type: "sign" }), null);
  assert.equal(cardEvent("card_removed"), "card_removed");
  assert.equal(cardEvent("card_exploded"), null);
  assert.equal(cardEvent({}), null);
});
