// @ts-check
// The agent's native API (docs/api.md), used by the service worker and the
// extension's own window. The token lives in chrome.storage.local and never leaves
// the extension: pages only ever see results.

import { loadConfig } from "./config.js";

export class AgentError extends Error {
  /**
   * @param {string} code an agent error code (lib/vocabulary.json) or the extension's (lib/wire.js)
   * @param {string} message
   * @param {Record<string, unknown>} [details]
   * @param {number} [status] HTTP status, 0 when there was no answer
   */
  constructor(code, message, details = {}, status = 0) {
    super(message);
    this.name = "AgentError";
    this.code = code;
    this.details = details;
    this.status = status;
  }
}

/** @returns {Promise<string | null>} */
export async function getToken() {
  const { token } = await chrome.storage.local.get("token");
  return typeof token === "string" && token ? token : null;
}

/** @param {string} token */
export async function setToken(token) {
  await chrome.storage.local.set({ token });
}

export async function clearToken() {
  await chrome.storage.local.remove("token");
}

/**
 * @param {unknown} value
 * @returns {Record<string, unknown>}
 */
function asRecord(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? /** @type {Record<string, unknown>} */ (value)
    : {};
}

/**
 * @typedef {object} CallOptions
 * @property {unknown} [body] sent as JSON
 * @property {boolean} [auth] send the token (default true)
 * @property {number} [timeoutMs]
 */

/**
 * One request to the agent. Answers are JSON; failures become AgentError with the
 * agent's code (or `agent_unreachable`, `not_paired`, `http_<status>`).
 * @param {"GET" | "POST"} method
 * @param {string} path
 * @param {CallOptions} [options]
 * @returns {Promise<{status: number, body: Record<string, unknown>}>}
 */
export async function call(method, path, { body, auth = true, timeoutMs = 30000 } = {}) {
  const config = await loadConfig();
  /** @type {Record<string, string>} */
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) {
    const token = await getToken();
    if (!token) throw new AgentError("not_paired", "not paired");
    headers.Authorization = `Bearer ${token}`;
  }
  let response;
  try {
    response = await fetch(config.agentUrl + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new AgentError("agent_unreachable", err instanceof Error ? err.message : String(err));
  }
  /** @type {unknown} */
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok && response.status !== 202) {
    const error = asRecord(asRecord(payload).error);
    const code = typeof error.code === "string" && error.code ? error.code : `http_${response.status}`;
    if (code === "unauthorized" && auth) {
      // Revoked or unknown: forget it, the next call goes back to pairing.
      await clearToken();
    }
    const message = typeof error.message === "string" ? error.message : code;
    throw new AgentError(code, message, asRecord(error.details), response.status);
  }
  return { status: response.status, body: asRecord(payload) };
}

// Answers are passed through as the agent's JSON (docs/api.md): this layer checks the
// transport, the callers read the fields they show.
/** @typedef {Record<string, any>} AgentAnswer */

export const agent = {
  /** @returns {Promise<AgentAnswer>} */
  status: async () => (await call("GET", "/v1/status", { auth: false, timeoutMs: 5000 })).body,
  /** @param {string} clientName @returns {Promise<AgentAnswer>} */
  pair: async (clientName) =>
    (await call("POST", "/v1/pair", { auth: false, body: { client_name: clientName } })).body,
  /** @param {string} requestId @returns {Promise<AgentAnswer>} */
  claim: async (requestId) =>
    (await call("POST", "/v1/pair/claim", { auth: false, body: { request_id: requestId } })).body,
  /** @returns {Promise<AgentAnswer>} */
  card: async () => (await call("GET", "/v1/card")).body,
  /** @returns {Promise<AgentAnswer>} */
  certificates: async () => (await call("GET", "/v1/card/certificates")).body,
  /** @returns {Promise<AgentAnswer>} */
  pin: async () => (await call("GET", "/v1/pin")).body,
  /** @param {string} pin @param {boolean} confirmFinalTry @returns {Promise<AgentAnswer>} */
  verifyPin: async (pin, confirmFinalTry) =>
    (await call("POST", "/v1/pin/verify", { body: { pin, confirm_final_try: Boolean(confirmFinalTry) } })).body,
  /** @param {Record<string, unknown>} params @returns {Promise<AgentAnswer>} */
  sign: async (params) => (await call("POST", "/v1/sign", { body: params, timeoutMs: 60000 })).body,
  /** @returns {Promise<AgentAnswer>} */
  endSession: async () => (await call("POST", "/v1/session/end", { body: {} })).body,
};

/**
 * The agent's WebSocket URL for `path` (e.g. /v1/events).
 * @param {string} path
 * @returns {Promise<string>}
 */
export async function agentWsUrl(path) {
  const config = await loadConfig();
  return config.agentUrl.replace(/^http/, "ws") + path;
}
