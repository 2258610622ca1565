// Content script (isolated world) on the configured origins. Two jobs:
// 1. the page API: window.postMessage requests from the page's own window -> the
//    service worker -> answers posted back to the page;
// 2. the Single Window bridge: frames of the MAIN-world WebSocket wrapper
//    (bridge-main.js) -> a port per socket -> the service worker.
// Messages whose source is not this very window, or whose origin is not this page's,
// are ignored (an iframe cannot ask, nor answer in our name).
(() => {
  "use strict";
  const API = "card-agent/v1";
  const BRIDGE = "card-agent-bridge/v1";
  const ORIGIN = window.location.origin;

  let port = null;
  let hello = null; // Promise<{pageApi, bridge}>
  let seq = 0;
  const pending = new Map(); // internal id -> page request id

  function post(message) {
    window.postMessage(message, ORIGIN);
  }

  function connect() {
    if (port) return hello;
    port = chrome.runtime.connect({ name: "page" });
    const helloId = `hello-${++seq}`;
    hello = new Promise((resolve) => {
      pending.set(helloId, { resolve });
    });
    port.onMessage.addListener((msg) => {
      if (msg && typeof msg.event === "string") {
        post({ channel: API, type: "event", event: msg.event });
        return;
      }
      const entry = pending.get(msg && msg.id);
      if (!entry) return;
      pending.delete(msg.id);
      if (entry.resolve) {
        entry.resolve(msg.ok ? msg.result : { pageApi: false, bridge: false });
        return;
      }
      post(
        msg.ok
          ? { channel: API, type: "response", id: entry.pageId, ok: true, result: msg.result }
          : { channel: API, type: "response", id: entry.pageId, ok: false, error: msg.error },
      );
    });
    port.onDisconnect.addListener(() => {
      port = null;
      hello = null;
      for (const [id, entry] of pending) {
        pending.delete(id);
        if (entry.resolve) entry.resolve({ pageApi: false, bridge: false });
        else {
          post({
            channel: API,
            type: "response",
            id: entry.pageId,
            ok: false,
            error: { code: "extension_restarted", message: "电子口岸卡助手已重新启动，请重试。", details: {} },
          });
        }
      }
    });
    port.postMessage({ id: helloId, method: "hello" });
    return hello;
  }

  async function onApiRequest(data) {
    const { id, method, params } = data;
    if (typeof id !== "string" || id.length === 0 || id.length > 64 || typeof method !== "string") return;
    const caps = await connect();
    if (!caps.pageApi) return; // not an allowed page: no answer at all
    const internal = `r-${++seq}`;
    pending.set(internal, { pageId: id });
    port.postMessage({ id: internal, method, params });
  }

  // --- bridge -----------------------------------------------------------------------
  const sockets = new Map(); // sid -> port

  async function onBridge(data) {
    const { sid } = data;
    if (typeof sid !== "string" || sid.length > 64) return;
    if (data.type === "open") {
      if (sockets.has(sid)) return;
      const caps = await connect();
      if (!caps.bridge) {
        post({ channel: BRIDGE, type: "closed", sid, code: 1006, reason: "", wasClean: false });
        return;
      }
      const socketPort = chrome.runtime.connect({ name: "bridge" });
      sockets.set(sid, socketPort);
      socketPort.onMessage.addListener((msg) => {
        if (msg.type === "closed") sockets.delete(sid);
        post({ ...msg, channel: BRIDGE, sid });
      });
      socketPort.onDisconnect.addListener(() => {
        if (sockets.get(sid) === socketPort) {
          sockets.delete(sid);
          post({ channel: BRIDGE, type: "closed", sid, code: 1006, reason: "", wasClean: false });
        }
      });
      socketPort.postMessage({ type: "open", url: String(data.url || "") });
    } else if (data.type === "send") {
      const socketPort = sockets.get(sid);
      if (socketPort && typeof data.data === "string") socketPort.postMessage({ type: "send", data: data.data });
    } else if (data.type === "close") {
      const socketPort = sockets.get(sid);
      if (socketPort) {
        socketPort.postMessage({ type: "close", code: data.code, reason: data.reason });
      }
    }
  }

  window.addEventListener("message", (event) => {
    if (event.source !== window || event.origin !== ORIGIN) return;
    const data = event.data;
    if (!data || typeof data !== "object") return;
    if (data.channel === API && data.type === "request") onApiRequest(data);
    else if (data.channel === BRIDGE && ["open", "send", "close"].includes(data.type)) onBridge(data);
  });

  // Tell the page the API is here (only where it is allowed).
  if (window.top === window) {
    connect().then((caps) => {
      if (caps.pageApi) post({ channel: API, type: "ready" });
    });
  }
})();
