// @ts-check
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { ERROR_TEXTS, PURPOSE_TEXTS, isKnownErrorCode, purposeText, siteName, zhMessage } from "../../extension/lib/messages.js";
import { AGENT_ERROR_CODES, PURPOSES, isPurpose } from "../../extension/lib/vocabulary.js";
import { EXTENSION_ERROR_CODES } from "../../extension/lib/wire.js";

const vocabulary = JSON.parse(readFileSync(new URL("../../extension/lib/vocabulary.json", import.meta.url), "utf8"));

test("the vocabulary file has the shape the Python side exports", () => {
  assert.ok(Array.isArray(vocabulary.error_codes) && Array.isArray(vocabulary.purposes));
  assert.deepEqual([...AGENT_ERROR_CODES], vocabulary.error_codes);
  assert.deepEqual([...PURPOSES], vocabulary.purposes);
  assert.equal(new Set(AGENT_ERROR_CODES).size, AGENT_ERROR_CODES.length);
});

test("every agent and extension error code has a Chinese text, and no text is for an unknown code", () => {
  for (const code of [...AGENT_ERROR_CODES, ...EXTENSION_ERROR_CODES]) {
    assert.ok(Object.hasOwn(ERROR_TEXTS, code), `no text for ${code}`);
    assert.ok(isKnownErrorCode(code));
  }
  for (const code of Object.keys(ERROR_TEXTS)) assert.ok(isKnownErrorCode(code), `text for unknown code ${code}`);
  assert.equal(isKnownErrorCode("no_such_code"), false);
});

test("every purpose has a label, and only those", () => {
  assert.deepEqual(Object.keys(PURPOSE_TEXTS).sort(), [...PURPOSES].sort());
  assert.equal(purposeText("login"), "卡介质登录");
  assert.ok(isPurpose("seal"));
  assert.equal(isPurpose("bare_digest"), false);
  assert.equal(isPurpose(undefined), false);
});

test("zhMessage: tries left on a wrong PIN, a fallback for codes it does not know", () => {
  assert.equal(zhMessage("pin_incorrect", { tries_left: 3 }), "密码错误，还可尝试 3 次。");
  assert.equal(zhMessage("pin_incorrect", { tries_left: "3" }), ERROR_TEXTS.pin_incorrect);
  assert.equal(zhMessage("http_502"), "操作失败（http_502）。");
  assert.equal(zhMessage("toString"), "操作失败（toString）。");
});

test("siteName names the Single Window only on https and its own domain", () => {
  assert.equal(siteName("https://www.singlewindow.cn"), "中国国际贸易单一窗口");
  assert.equal(siteName("http://www.singlewindow.cn"), "其他网站（请确认您认识它）");
  assert.equal(siteName("https://singlewindow.cn.example.com"), "其他网站（请确认您认识它）");
  assert.equal(siteName("http://localhost:17380"), "本机网站（练习或培训用）");
  assert.equal(siteName("not a url"), "其他网站（请确认您认识它）");
});
