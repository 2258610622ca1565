// Service worker: the only place that holds the agent token (via lib/agent.js) and
// decides which pages may do what. Pages talk to it through the content script;
// every check uses what the browser says about the sender (port.sender.origin,
// frameId), never what a page claims.

import { AgentError, agent, agentWsUrl, getToken } from "./lib/agent.js";
import { loadConfig } from "./lib/config.js";
import { PURPOSES, zhMessage } from "./lib/messages.js";

const MAX_DATA_BYTES = 1024 * 1024; // the agent's default security.max_data_bytes
const SCRIPT_IDS = ["card-agent-isolated", "card-agent-bridge-main"];

// --- content scripts follow the configured origins ----------------------------------

function matchPatterns(origins) {
  return origins.map((origin) => `${origin}/*`);
}

async function registerContentScripts() {
  const config = await loadConfig();
  const existing = await chrome.scripting.getRegisteredContentScripts({ ids: SCRIPT_IDS });
  if (existing.length) {
    await chrome.scripting.unregisterContentScripts({ ids: existing.map((s) => s.id) });
  }
  const all = [...new Set([...config.pageOrigins, ...config.bridgeOrigins])];
  const scripts = [];
  if (all.length) {
    scripts.push({
      id: SCRIPT_IDS[0],
      matches: matchPatterns(all),
      js: ["content/isolated.js"],
      runAt: "document_start",
      allFrames: true, // the bridge serves frames too; the page API only the top frame
      world: "ISOLATED",
      persistAcrossSessions: true,
    });
  }
  if (config.bridgeOrigins.length) {
    scripts.push({
      id: SCRIPT_IDS[1],
      matches: matchPatterns(config.bridgeOrigins),
      js: ["content/bridge-main.js"],
      runAt: "document_start",
      allFrames: true,
      world: "MAIN",
      persistAcrossSessions: true,
    });
  }
  if (scripts.length) await chrome.scripting.registerContentScripts(scripts);
  return config;
}

// Registrations run one after another: several triggers (start, install, a settings
// change) can fire together, and overlapping ones would clash on the script ids.
let configured = Promise.resolve();

// Tests and operators (DevTools on the service worker) apply new settings with this.
globalThis.reconfigure = () => {
  configured = configured
    .catch(() => {})
    .then(registerContentScripts)
    .catch((err) => {
      console.error("registering content scripts failed", err);
    });
  return configured;
};
globalThis.reconfigure();

chrome.runtime.onInstalled.addListener(() => globalThis.reconfigure());
chrome.runtime.onStartup.addListener(() => globalThis.reconfigure());
chrome.storage.onChanged.addListener((changes, area) => {
  if (area === "managed" || (area === "local" && changes.settings)) globalThis.reconfigure();
  if (area === "local" && changes.token) {
    // Paired (or forgotten): (re)open the event stream with the current token.
    if (eventSocket) eventSocket.close();
    watchEvents();
  }
});

// --- helpers ------------------------------------------------------------------------

function wireError(err) {
  const code = err instanceof AgentError ? err.code : "internal_error";
  const details = err instanceof AgentError ? err.details || {} : {};
  if (!(err instanceof AgentError)) console.error(err);
  return { code, message: zhMessage(code, details), details };
}

function b64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function bytesToB64(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function invalid(message) {
  return new AgentError("invalid_input", message);
}

// --- the extension's own window (pairing, PIN and confirmation) -----------------------

let dialog = null; // {id, kind, request, windowId, port, resolve, reject, timer}

function finishDialog(outcome) {
  const current = dialog;
  if (!current) return;
  dialog = null;
  clearTimeout(current.timer);
  if (outcome.ok) current.resolve(outcome.result);
  else current.reject(new AgentError(outcome.code || "user_cancelled", outcome.code || ""));
  if (current.windowId !== null) chrome.windows.remove(current.windowId).catch(() => {});
}

async function openDialog(kind, request) {
  if (dialog) throw new AgentError("dialog_busy", "dialog busy");
  const config = await loadConfig();
  const id = crypto.randomUUID();
  const done = new Promise((resolve, reject) => {
    dialog = { id, kind, request, windowId: null, port: null, resolve, reject, timer: null };
  });
  dialog.timer = setTimeout(
    () => finishDialog({ ok: false, code: "user_cancelled" }),
    (config.dialogTimeoutS + 30) * 1000,
  );
  try {
    const win = await chrome.windows.create({
      url: chrome.runtime.getURL(`ui/dialog.html#${id}`),
      type: "popup",
      width: 560,
      height: 820,
      focused: true,
    });
    if (dialog && dialog.id === id) dialog.windowId = win.id;
  } catch (err) {
    finishDialog({ ok: false, code: "internal_error" });
    throw err;
  }
  return done;
}

chrome.windows.onRemoved.addListener((windowId) => {
  if (dialog && dialog.windowId === windowId) finishDialog({ ok: false, code: "user_cancelled" });
});

function onDialogPort(port) {
  if (port.sender.id !== chrome.runtime.id || !port.sender.url?.startsWith(chrome.runtime.getURL("ui/"))) {
    port.disconnect();
    return;
  }
  port.onMessage.addListener(async (msg) => {
    if (!dialog || msg.id !== dialog.id) {
      port.postMessage({ type: "gone" });
      return;
    }
    if (msg.type === "get") {
      dialog.port = port;
      const config = await loadConfig();
      port.postMessage({
        type: "request",
        kind: dialog.kind,
        request: dialog.request,
        settings: { keypad: config.keypad, dialogTimeoutS: config.dialogTimeoutS, clientName: config.clientName },
      });
    } else if (msg.type === "done") {
      finishDialog({ ok: true, result: msg.result });
    } else if (msg.type === "cancel") {
      finishDialog({ ok: false, code: msg.code || "user_cancelled" });
    }
    // "ping": nothing to do; receiving it keeps this worker alive.
  });
  port.onDisconnect.addListener(() => {
    if (dialog && dialog.port === port) finishDialog({ ok: false, code: "user_cancelled" });
  });
}

async function ensurePaired() {
  if (await getToken()) return;
  await openDialog("pair", {});
  if (!(await getToken())) throw new AgentError("not_paired", "not paired");
}

// A token call; on a revoked token (lib/agent.js forgets it) pair again once.
async function withToken(fn) {
  await ensurePaired();
  try {
    return await fn();
  } catch (err) {
    if (err instanceof AgentError && (err.code === "unauthorized" || err.code === "not_paired")) {
      await ensurePaired();
      return fn();
    }
    throw err;
  }
}

// --- page API -----------------------------------------------------------------------

async function prepareSign(origin, params) {
  if (!params || typeof params !== "object") throw invalid("params");
  const { purpose, title } = params;
  if (!Object.hasOwn(PURPOSES, purpose)) throw invalid("purpose");
  if (typeof title !== "string" || !title.trim() || title.length > 200) throw invalid("title");
  let bytes;
  if (typeof params.text === "string" && params.data === undefined) {
    bytes = new TextEncoder().encode(params.text);
  } else if (typeof params.data === "string" && params.text === undefined) {
    if (params.data.length > ((MAX_DATA_BYTES + 2) / 3) * 4 + 4) {
      throw new AgentError("payload_too_large", "data");
    }
    try {
      bytes = b64ToBytes(params.data);
    } catch {
      throw invalid("data");
    }
  } else {
    throw invalid("give exactly one of text or data");
  }
  if (bytes.length === 0) throw invalid("empty document");
  if (bytes.length > MAX_DATA_BYTES) throw new AgentError("payload_too_large", "data");
  return {
    origin,
    purpose,
    purposeText: PURPOSES[purpose],
    title: title.trim(),
    size: bytes.length,
    sha256: await sha256Hex(bytes),
    data: bytesToB64(bytes),
    preview: typeof params.text === "string" ? params.text.slice(0, 2000) : null,
  };
}

const PAGE_METHODS = {
  async ping() {
    return { extension: chrome.runtime.getManifest().version };
  },
  async status() {
    const status = await agent.status();
    return {
      agent: { version: status.version, reader_present: status.reader_present, card_present: status.card_present },
      paired: Boolean(await getToken()),
    };
  },
  async pair() {
    await ensurePaired();
    return { paired: true };
  },
  async card() {
    return withToken(() => agent.card());
  },
  async certificates() {
    return withToken(() => agent.certificates());
  },
  async pinStatus() {
    return withToken(() => agent.pin());
  },
  async sign(origin, params) {
    const request = await prepareSign(origin, params);
    return openDialog("sign", request);
  },
  async endSession() {
    if (!(await getToken())) return { ended: false };
    return agent.endSession();
  },
};

const pagePorts = new Set();

function onPagePort(port) {
  const config = configured.then(() => loadConfig());
  const origin = port.sender.origin;
  const topFrame = port.sender.frameId === 0 && Boolean(port.sender.tab);
  port.onDisconnect.addListener(() => pagePorts.delete(port));
  port.onMessage.addListener(async (msg) => {
    const { pageOrigins, bridgeOrigins } = await config;
    const pageApi = topFrame && pageOrigins.includes(origin);
    if (msg && msg.method === "hello") {
      port.postMessage({ id: msg.id, ok: true, result: { pageApi, bridge: bridgeOrigins.includes(origin) } });
      if (pageApi) {
        pagePorts.add(port);
        watchEvents();
      }
      return;
    }
    if (!pageApi) {
      port.postMessage({ id: msg && msg.id, ok: false, error: wireError(new AgentError("not_allowed", "")) });
      return;
    }
    const handler = msg && typeof msg.method === "string" && Object.hasOwn(PAGE_METHODS, msg.method)
      ? PAGE_METHODS[msg.method]
      : null;
    try {
      if (!handler) throw invalid("unknown method");
      const result = await handler(origin, msg.params);
      port.postMessage({ id: msg.id, ok: true, result });
    } catch (err) {
      try {
        port.postMessage({ id: msg.id, ok: false, error: wireError(err) });
      } catch {
        // the page went away meanwhile
      }
    }
  });
}

// --- card events for pages (card pulled mid-flow, a new card) ------------------------

let eventSocket = null;

async function watchEvents() {
  if (eventSocket || !pagePorts.size) return;
  const token = await getToken();
  if (!token || eventSocket) return;
  const ws = new WebSocket(await agentWsUrl("/v1/events"));
  eventSocket = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
  ws.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!["card_inserted", "card_removed", "card_reset", "reader_added", "reader_removed"].includes(msg.type)) return;
    for (const port of pagePorts) {
      try {
        port.postMessage({ event: msg.type });
      } catch {
        pagePorts.delete(port);
      }
    }
    if (dialog && dialog.port) dialog.port.postMessage({ type: "event", event: msg.type });
  };
  ws.onclose = () => {
    if (eventSocket === ws) eventSocket = null;
    if (pagePorts.size) setTimeout(watchEvents, 2000);
  };
}

// --- the Single Window bridge: official-client WebSocket -> card-agent's endpoint ------

// The endpoint sees the extension's origin on the socket; so that its audit log still
// names the page, a signing request without a title gets one naming the page's origin
// (card-agent's `args.title` extension, docs/compat.md). Anything else passes unchanged,
// chunked (BLOCKTXT) frames included.
function withPageOrigin(text, origin) {
  if (!text.startsWith("{")) return text;
  let request;
  try {
    request = JSON.parse(text);
  } catch {
    return text;
  }
  const method = request && typeof request._method === "string" ? request._method : "";
  const args = request.args;
  if (!/_Spc.*Sign|Sign.*_?Random/.test(method) || !args || typeof args !== "object" || args.title) return text;
  args.title = `${method.replace(/^[^_]+_/, "")}（${origin}）`;
  return JSON.stringify(request);
}

function onBridgePort(port) {
  const origin = port.sender.origin;
  let ws = null;
  port.onMessage.addListener(async (msg) => {
    if (msg.type === "open" && ws === null) {
      const config = await configured.then(() => loadConfig());
      if (!config.bridgeOrigins.includes(origin)) {
        port.postMessage({ type: "closed", code: 1006, reason: "", wasClean: false });
        port.disconnect();
        return;
      }
      ws = new WebSocket(config.compatUrl);
      ws.onopen = () => port.postMessage({ type: "opened" });
      ws.onmessage = (event) => {
        if (typeof event.data === "string") port.postMessage({ type: "message", data: event.data });
      };
      ws.onerror = () => port.postMessage({ type: "error" });
      ws.onclose = (event) => {
        try {
          port.postMessage({ type: "closed", code: event.code, reason: event.reason, wasClean: event.wasClean });
          port.disconnect();
        } catch {
          // the page is gone
        }
      };
    } else if (msg.type === "send" && ws && ws.readyState === WebSocket.OPEN && typeof msg.data === "string") {
      ws.send(withPageOrigin(msg.data, origin));
    } else if (msg.type === "close" && ws) {
      ws.close(msg.code === 1000 || (msg.code >= 3000 && msg.code <= 4999) ? msg.code : 1000);
    }
  });
  port.onDisconnect.addListener(() => {
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  });
}

chrome.runtime.onConnect.addListener((port) => {
  if (port.name === "dialog") onDialogPort(port);
  else if (port.name === "page" && port.sender.tab) onPagePort(port);
  else if (port.name === "bridge" && port.sender.tab) onBridgePort(port);
  else port.disconnect();
});

// The toolbar popup asks for (re-)pairing.
chrome.runtime.onMessage.addListener((msg, sender) => {
  if (sender.id === chrome.runtime.id && !sender.tab && msg && msg.type === "pair") {
    openDialog("pair", {}).catch(() => {});
  }
  return false;
});
