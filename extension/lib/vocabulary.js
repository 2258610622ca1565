// @ts-check
// The vocabulary the agent owns: its wire error codes (agent/errors.py) and signing
// purposes (agent/service.py), read from the one file the Python side exports,
// lib/vocabulary.json. It is a JSON module (import attributes): Chromium's module
// service worker and the extension's pages load it with the code that uses it, before
// any listener runs, so there is no start-up fetch to wait for and no race with it.
// (Content scripts never need it: they relay, the service worker decides.)

import vocabulary from "./vocabulary.json" with { type: "json" };

/**
 * @param {unknown} value
 * @param {string} key
 * @returns {readonly string[]}
 */
function stringList(value, key) {
  if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === "string" && /^[a-z_]+$/.test(v))) {
    throw new Error(`lib/vocabulary.json: "${key}" must be a non-empty list of snake_case names`);
  }
  return Object.freeze([...value]);
}

/** Error codes the agent answers with (`{"error": {"code": ...}}`), in its order. */
export const AGENT_ERROR_CODES = stringList(vocabulary.error_codes, "error_codes");

/** Signing purposes the agent accepts (`POST /v1/sign`, `purpose`). */
export const PURPOSES = stringList(vocabulary.purposes, "purposes");

/**
 * @param {unknown} value
 * @returns {value is string}
 */
export function isPurpose(value) {
  return typeof value === "string" && PURPOSES.includes(value);
}
