// @ts-check
// Content script (isolated world) on the Single Window, the practice site and the
// origins added by policy. Two jobs:
// 1. the page API: window.postMessage requests from the page's own window -> the
//    service worker -> answers posted back to the page;
// 2. the Single Window bridge: frames of the MAIN-world WebSocket wrapper
//    (bridge-main.js) -> a port per socket -> the service worker.
// What this page may use is the service worker's decision (the "hello" answer), taken
// on what the browser says about this frame. Messages whose source is not this very
// window, or whose origin is not this page's, are ignored (an iframe cannot ask, nor
// answer in our name). The message shapes are in lib/wire.js; a content script cannot
// import it, so the names below are typed against it.
(() => {
  "use strict";

  /** @typedef {import("../lib/wire.js").PageRequest} PageRequest */
  /** @typedef {import("../lib/wire.js").PageResponse} PageResponse */
  /** @typedef {import("../lib/wire.js").PageReady} PageReady */
  /** @typedef {import("../lib/wire.js").PageEvent} PageEvent */
  /** @typedef {import("../lib/wire.js").BridgeFrameToExtension} BridgeFrameToExtension */
  /** @typedef {import("../lib/wire.js").BridgeFrameToPage} BridgeFrameToPage */
  /** @typedef {import("../lib/wire.js").Capabilities} Capabilities */
  /** @typedef {import("../lib/wire.js").PortAnswer} PortAnswer */
  /** @typedef {import("../lib/wire.js").PortEvent} PortEvent */
  /** @typedef {import("../lib/wire.js").SocketCommand} SocketCommand */
  /** @typedef {import("../lib/wire.js").SocketEvent} SocketEvent */
  /** @typedef {import("../lib/wire.js").WireError} WireError */

  /** @type {import("../lib/wire.js").PageChannel} */
  const API = "card-agent/v1";
  /** @type {import("../lib/wire.js").BridgeChannel} */
  const BRIDGE = "card-agent-bridge/v1";
  const MAX_ID_LENGTH = 64; // lib/wire.js MAX_REQUEST_ID_LENGTH, MAX_SOCKET_ID_LENGTH
  const ORIGIN = window.location.origin;
  /** @type {Capabilities} */
  const NOTHING = { pageApi: false, bridge: false };

  /** @type {chrome.runtime.Port | null} */
  let port = null;
  /** @type {Promise<Capabilities> | null} */
  let hello = null;
  let seq = 0;
  /** @type {Map<string, {pageId: string} | {resolve: (caps: Capabilities) => void}>} */
  const pending = new Map();

  /** @param {PageResponse | PageReady | PageEvent | BridgeFrameToPage} message */
  function post(message) {
    window.postMessage(message, ORIGIN);
  }

  /** @param {string} pageId @param {WireError} error */
  function fail(pageId, error) {
    post({ channel: API, type: "response", id: pageId, ok: false, error });
  }

  /** @param {unknown} msg */
  function onPortMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    if ("event" in msg) {
      post({ channel: API, type: "event", event: /** @type {PortEvent} */ (msg).event });
      return;
    }
    const answer = /** @type {PortAnswer} */ (msg);
    const entry = answer.id === null ? undefined : pending.get(answer.id);
    if (!entry || answer.id === null) return;
    pending.delete(answer.id);
    if ("resolve" in entry) {
      entry.resolve(answer.ok ? /** @type {Capabilities} */ (answer.result) : NOTHING);
    } else if (answer.ok) {
      post({ channel: API, type: "response", id: entry.pageId, ok: true, result: answer.result });
    } else {
      fail(entry.pageId, answer.error);
    }
  }

  /** @returns {Promise<Capabilities>} */
  function connect() {
    if (port && hello) return hello;
    try {
      port = chrome.runtime.connect({ name: "page" });
    } catch {
      // This script belongs to an extension that was updated or removed since the page
      // loaded: it stops listening, the current one's script takes over.
      window.removeEventListener("message", onWindowMessage);
      return Promise.resolve(NOTHING);
    }
    const helloId = `hello-${++seq}`;
    hello = new Promise((resolve) => {
      pending.set(helloId, { resolve });
    });
    port.onMessage.addListener(onPortMessage);
    port.onDisconnect.addListener(() => {
      port = null;
      hello = null;
      for (const [id, entry] of pending) {
        pending.delete(id);
        if ("resolve" in entry) entry.resolve(NOTHING);
        else fail(entry.pageId, { code: "extension_restarted", message: "电子口岸卡助手已重新启动，请重试。", details: {} });
      }
    });
    port.postMessage({ id: helloId, method: "hello" });
    return hello;
  }

  /** @param {PageRequest} data */
  async function onApiRequest(data) {
    const { id, method, params } = data;
    if (typeof id !== "string" || id.length === 0 || id.length > MAX_ID_LENGTH || typeof method !== "string") return;
    const caps = await connect();
    if (!caps.pageApi || !port) return; // not an allowed page: no answer at all
    const internal = `r-${++seq}`;
    pending.set(internal, { pageId: id });
    port.postMessage({ id: internal, method, params });
  }

  // --- bridge -----------------------------------------------------------------------
  /** @type {Map<string, chrome.runtime.Port>} */
  const sockets = new Map();

  /** @param {chrome.runtime.Port} socketPort @param {SocketCommand} command */
  function send(socketPort, command) {
    socketPort.postMessage(command);
  }

  /** @param {BridgeFrameToExtension} data */
  async function onBridge(data) {
    const { sid } = data;
    if (typeof sid !== "string" || sid.length === 0 || sid.length > MAX_ID_LENGTH) return;
    if (data.type === "open") {
      if (sockets.has(sid)) return;
      const caps = await connect();
      if (!caps.bridge) {
        // Not bridged here: the wrapper gives the page the browser's own socket.
        post({ channel: BRIDGE, type: "native", sid });
        return;
      }
      const socketPort = chrome.runtime.connect({ name: "bridge" });
      sockets.set(sid, socketPort);
      socketPort.onMessage.addListener((/** @type {SocketEvent} */ msg) => {
        if (msg.type === "closed") sockets.delete(sid);
        post({ ...msg, channel: BRIDGE, sid });
      });
      socketPort.onDisconnect.addListener(() => {
        if (sockets.get(sid) === socketPort) {
          sockets.delete(sid);
          post({ channel: BRIDGE, type: "closed", sid, code: 1006, reason: "", wasClean: false });
        }
      });
      send(socketPort, { type: "open", url: String(data.url || "") });
    } else if (data.type === "send") {
      const socketPort = sockets.get(sid);
      if (socketPort && typeof data.data === "string") send(socketPort, { type: "send", data: data.data });
    } else if (data.type === "close") {
      const socketPort = sockets.get(sid);
      if (socketPort) send(socketPort, { type: "close", code: Number(data.code ?? 1000), reason: String(data.reason ?? "") });
    }
  }

  /** @param {MessageEvent} event */
  function onWindowMessage(event) {
    if (event.source !== window || event.origin !== ORIGIN) return;
    const data = event.data;
    if (!data || typeof data !== "object") return;
    if (data.channel === API && data.type === "request") onApiRequest(data);
    else if (data.channel === BRIDGE && ["open", "send", "close"].includes(data.type)) onBridge(data);
  }
  window.addEventListener("message", onWindowMessage);

  // The service worker asks, after installation, whether this page already has us
  // (lib/wire.js AliveProbe); a page loaded before the extension existed is reloaded.
  chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
    if (sender.id === chrome.runtime.id && !sender.tab && msg && msg.type === "alive") sendResponse(true);
    return false;
  });

  // Tell the page the API is here (only where it is allowed).
  if (window.top === window) {
    connect().then((caps) => {
      if (caps.pageApi) post({ channel: API, type: "ready" });
    });
  }
})();
