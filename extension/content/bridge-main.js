// MAIN-world content script on Single Window origins: pages that talk to the official
// E-Port client (wss://wss.singlewindow.cn:61231 or ws://127.0.0.1:61232) get a
// WebSocket look-alike whose frames travel page -> content script -> extension ->
// card-agent's official-protocol endpoint. Any other URL gets the browser's own
// WebSocket, untouched. Unmodified pages work on a kiosk without the Windows client.
(() => {
  "use strict";
  const NativeWebSocket = window.WebSocket;
  if (!NativeWebSocket || NativeWebSocket.__cardAgentBridge) return;
  const CHANNEL = "card-agent-bridge/v1";
  const ORIGIN = window.location.origin;

  function isOfficialClient(url) {
    try {
      const u = new URL(url, window.location.href);
      return (
        (u.protocol === "wss:" && u.hostname === "wss.singlewindow.cn" && u.port === "61231") ||
        (u.protocol === "ws:" && ["127.0.0.1", "localhost"].includes(u.hostname) && u.port === "61232")
      );
    } catch {
      return false;
    }
  }

  const sockets = new Map(); // sid -> BridgedWebSocket

  class BridgedWebSocket extends EventTarget {
    #sid;
    #url;
    #readyState = 0;
    binaryType = "blob";

    constructor(url) {
      super();
      this.#url = new URL(url, window.location.href).href;
      this.#sid = `s-${Math.random().toString(36).slice(2)}-${Date.now().toString(36)}`;
      sockets.set(this.#sid, this);
      window.postMessage({ channel: CHANNEL, type: "open", sid: this.#sid, url: this.#url }, ORIGIN);
    }

    get url() { return this.#url; }
    get readyState() { return this.#readyState; }
    get bufferedAmount() { return 0; }
    get extensions() { return ""; }
    get protocol() { return ""; }

    send(data) {
      if (this.#readyState === 0) throw new DOMException("Still in CONNECTING state.", "InvalidStateError");
      if (this.#readyState !== 1) return;
      window.postMessage({ channel: CHANNEL, type: "send", sid: this.#sid, data: String(data) }, ORIGIN);
    }

    close(code = 1000, reason = "") {
      if (this.#readyState >= 2) return;
      this.#readyState = 2;
      window.postMessage({ channel: CHANNEL, type: "close", sid: this.#sid, code, reason: String(reason) }, ORIGIN);
    }

    _deliver(msg) {
      if (msg.type === "opened" && this.#readyState === 0) {
        this.#readyState = 1;
        this.dispatchEvent(new Event("open"));
      } else if (msg.type === "message" && this.#readyState === 1) {
        this.dispatchEvent(new MessageEvent("message", { data: msg.data, origin: new URL(this.#url).origin }));
      } else if (msg.type === "error") {
        this.dispatchEvent(new Event("error"));
      } else if (msg.type === "closed" && this.#readyState !== 3) {
        const wasOpen = this.#readyState === 1 || this.#readyState === 2;
        this.#readyState = 3;
        sockets.delete(this.#sid);
        if (!wasOpen && !msg.wasClean) this.dispatchEvent(new Event("error"));
        this.dispatchEvent(
          new CloseEvent("close", { code: msg.code || 1006, reason: msg.reason || "", wasClean: Boolean(msg.wasClean) }),
        );
      }
    }
  }

  // onopen/onmessage/onclose/onerror, as on a real WebSocket.
  const handlers = new WeakMap(); // socket -> {open, message, close, error}
  for (const name of ["open", "message", "close", "error"]) {
    Object.defineProperty(BridgedWebSocket.prototype, `on${name}`, {
      configurable: true,
      get() {
        return handlers.get(this)?.[name] ?? null;
      },
      set(fn) {
        const own = handlers.get(this) ?? {};
        if (own[name]) this.removeEventListener(name, own[name]);
        own[name] = typeof fn === "function" ? fn : null;
        if (own[name]) this.addEventListener(name, own[name]);
        handlers.set(this, own);
      },
    });
  }
  for (const [name, value] of Object.entries({ CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 })) {
    Object.defineProperty(BridgedWebSocket, name, { value });
    Object.defineProperty(BridgedWebSocket.prototype, name, { value });
  }

  window.addEventListener("message", (event) => {
    if (event.source !== window || event.origin !== ORIGIN) return;
    const data = event.data;
    if (!data || data.channel !== CHANNEL || !["opened", "message", "closed", "error"].includes(data.type)) return;
    const socket = sockets.get(data.sid);
    if (socket) socket._deliver(data);
  });

  function WebSocketProxy(url, protocols) {
    if (!new.target) throw new TypeError("Failed to construct 'WebSocket': Please use the 'new' operator");
    if (isOfficialClient(url)) return new BridgedWebSocket(url);
    return protocols === undefined ? new NativeWebSocket(url) : new NativeWebSocket(url, protocols);
  }
  WebSocketProxy.prototype = NativeWebSocket.prototype;
  for (const [name, value] of Object.entries({ CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 })) {
    Object.defineProperty(WebSocketProxy, name, { value });
  }
  Object.defineProperty(WebSocketProxy, "__cardAgentBridge", { value: true });
  window.WebSocket = WebSocketProxy;
})();
