// The agent's native API (docs/api.md), used by the service worker and the
// extension's own window. The token lives in chrome.storage.local and never leaves
// the extension: pages only ever see results.

import { loadConfig } from "./config.js";

export class AgentError extends Error {
  constructor(code, message, details = {}, status = 0) {
    super(message);
    this.code = code;
    this.details = details;
    this.status = status;
  }
}

export async function getToken() {
  const { token } = await chrome.storage.local.get("token");
  return typeof token === "string" && token ? token : null;
}

export async function setToken(token) {
  await chrome.storage.local.set({ token });
}

export async function clearToken() {
  await chrome.storage.local.remove("token");
}

async function call(method, path, { body, auth = true, timeoutMs = 30000 } = {}) {
  const config = await loadConfig();
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
    throw new AgentError("agent_unreachable", String(err && err.message ? err.message : err));
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok && response.status !== 202) {
    const error = (payload && payload.error) || {};
    const code = error.code || `http_${response.status}`;
    if (code === "unauthorized" && auth) {
      // Revoked or unknown: forget it, the next call goes back to pairing.
      await clearToken();
    }
    throw new AgentError(code, error.message || code, error.details || {}, response.status);
  }
  return { status: response.status, body: payload };
}

export const agent = {
  status: async () => (await call("GET", "/v1/status", { auth: false, timeoutMs: 5000 })).body,
  pair: async (clientName) =>
    (await call("POST", "/v1/pair", { auth: false, body: { client_name: clientName } })).body,
  claim: async (requestId) =>
    (await call("POST", "/v1/pair/claim", { auth: false, body: { request_id: requestId } })).body,
  card: async () => (await call("GET", "/v1/card")).body,
  certificates: async () => (await call("GET", "/v1/card/certificates")).body,
  pin: async () => (await call("GET", "/v1/pin")).body,
  verifyPin: async (pin, confirmFinalTry) =>
    (
      await call("POST", "/v1/pin/verify", {
        body: { pin, confirm_final_try: Boolean(confirmFinalTry) },
      })
    ).body,
  sign: async (params) => (await call("POST", "/v1/sign", { body: params, timeoutMs: 60000 })).body,
  endSession: async () => (await call("POST", "/v1/session/end", { body: {} })).body,
};

export async function agentWsUrl(path) {
  const config = await loadConfig();
  return config.agentUrl.replace(/^http/, "ws") + path;
}
