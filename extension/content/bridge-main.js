// @ts-check
// MAIN-world content script on Single Window origins: pages that talk to the official
// E-Port client (wss://wss.singlewindow.cn:61231 or ws://127.0.0.1:61232) get a
// WebSocket look-alike whose frames travel page -> content script -> extension ->
// card-agent's official-protocol endpoint. Any other URL gets the browser's own
// WebSocket, untouched. Unmodified pages work on a kiosk without the Windows client.
//
// It runs at document_start, before the page's own scripts (the official library opens
// its socket while the page is still parsing). Whether this page is bridged is only
// known once the service worker answers, so a socket starts as a look-alike and, when
// the answer is "not bridged here", turns into the browser's own socket to the same URL.
// This code runs in the page's world: it holds no secret and decides nothing.
(() => {
  "use strict";

  /** @typedef {import("../lib/wire.js").BridgeFrameToPage} BridgeFrameToPage */
  /** @typedef {import("../lib/wire.js").BridgeFrameToExtension} BridgeFrameToExtension */

  const NativeWebSocket = window.WebSocket;
  if (!NativeWebSocket || /** @type {any} */ (NativeWebSocket).__cardAgentBridge) return;
  /** @type {import("../lib/wire.js").BridgeChannel} */
  const CHANNEL = "card-agent-bridge/v1";
  const ORIGIN = window.location.origin;
  const STATES = Object.freeze({ CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });

  /** @param {string | URL} url */
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

  /** @param {BridgeFrameToExtension} frame */
  function post(frame) {
    window.postMessage(frame, ORIGIN);
  }

  /**
   * The same event again, dispatched on the look-alike (an event cannot be re-dispatched).
   * @param {Event} event
   * @returns {Event}
   */
  function copyEvent(event) {
    if (event instanceof MessageEvent) {
      return new MessageEvent("message", { data: event.data, origin: event.origin, lastEventId: event.lastEventId });
    }
    if (event instanceof CloseEvent) {
      return new CloseEvent("close", { code: event.code, reason: event.reason, wasClean: event.wasClean });
    }
    return new Event(event.type);
  }

  /** @type {Map<string, BridgedWebSocket>} */
  const sockets = new Map(); // sid -> BridgedWebSocket

  class BridgedWebSocket extends EventTarget {
    #sid;
    #url;
    /** @type {string | string[] | undefined} */
    #protocols;
    #readyState = 0;
    #binaryType = /** @type {BinaryType} */ ("blob");
    /** @type {WebSocket | null} the browser's own socket, on pages that are not bridged */
    #native = null;

    /**
     * @param {string | URL} url
     * @param {string | string[] | undefined} protocols
     */
    constructor(url, protocols) {
      super();
      this.#url = new URL(url, window.location.href).href;
      this.#protocols = protocols;
      this.#sid = `s-${Math.random().toString(36).slice(2)}-${Date.now().toString(36)}`;
      sockets.set(this.#sid, this);
      post({ channel: CHANNEL, type: "open", sid: this.#sid, url: this.#url });
    }

    get url() {
      return this.#url;
    }
    get readyState() {
      return this.#native ? this.#native.readyState : this.#readyState;
    }
    get bufferedAmount() {
      return this.#native ? this.#native.bufferedAmount : 0;
    }
    get extensions() {
      return this.#native ? this.#native.extensions : "";
    }
    get protocol() {
      return this.#native ? this.#native.protocol : "";
    }
    get binaryType() {
      return this.#native ? this.#native.binaryType : this.#binaryType;
    }
    set binaryType(value) {
      this.#binaryType = value;
      if (this.#native) this.#native.binaryType = value;
    }

    /** @param {string | ArrayBufferLike | Blob | ArrayBufferView} data */
    send(data) {
      if (this.#native) {
        this.#native.send(data);
        return;
      }
      if (this.#readyState === 0) throw new DOMException("Still in CONNECTING state.", "InvalidStateError");
      if (this.#readyState !== 1) return;
      post({ channel: CHANNEL, type: "send", sid: this.#sid, data: String(data) });
    }

    /** @param {number} [code] @param {string} [reason] */
    close(code = 1000, reason = "") {
      if (this.#native) {
        this.#native.close(code, reason);
        return;
      }
      if (this.#readyState >= 2) return;
      this.#readyState = 2;
      post({ channel: CHANNEL, type: "close", sid: this.#sid, code, reason: String(reason) });
    }

    /** Not bridged on this page: from now on this is the browser's own socket. */
    #becomeNative() {
      sockets.delete(this.#sid);
      if (this.#readyState !== 0) {
        // closed by the page while we waited: as a native socket closed while connecting
        this.#readyState = 3;
        this.dispatchEvent(new CloseEvent("close", { code: 1006, reason: "", wasClean: false }));
        return;
      }
      const native =
        this.#protocols === undefined ? new NativeWebSocket(this.#url) : new NativeWebSocket(this.#url, this.#protocols);
      native.binaryType = this.#binaryType;
      for (const type of ["open", "message", "error", "close"]) {
        native.addEventListener(type, (event) => this.dispatchEvent(copyEvent(event)));
      }
      this.#native = native;
    }

    /** @param {BridgeFrameToPage} msg */
    _deliver(msg) {
      if (this.#native) return;
      if (msg.type === "native") {
        this.#becomeNative();
      } else if (msg.type === "opened" && this.#readyState === 0) {
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
  /** @type {WeakMap<BridgedWebSocket, Record<string, EventListener | null>>} */
  const handlers = new WeakMap();
  for (const name of ["open", "message", "close", "error"]) {
    Object.defineProperty(BridgedWebSocket.prototype, `on${name}`, {
      configurable: true,
      /** @this {BridgedWebSocket} */
      get() {
        return handlers.get(this)?.[name] ?? null;
      },
      /** @this {BridgedWebSocket} @param {unknown} fn */
      set(fn) {
        const own = handlers.get(this) ?? {};
        const old = own[name];
        if (old) this.removeEventListener(name, old);
        own[name] = typeof fn === "function" ? /** @type {EventListener} */ (fn) : null;
        const now = own[name];
        if (now) this.addEventListener(name, now);
        handlers.set(this, own);
      },
    });
  }
  for (const [name, value] of Object.entries(STATES)) {
    Object.defineProperty(BridgedWebSocket, name, { value });
    Object.defineProperty(BridgedWebSocket.prototype, name, { value });
  }

  window.addEventListener("message", (event) => {
    if (event.source !== window || event.origin !== ORIGIN) return;
    const data = event.data;
    if (!data || data.channel !== CHANNEL || !["opened", "message", "closed", "error", "native"].includes(data.type)) {
      return;
    }
    const socket = sockets.get(data.sid);
    if (socket) socket._deliver(data);
  });

  /**
   * @this {unknown}
   * @param {string | URL} url
   * @param {string | string[]} [protocols]
   */
  function WebSocketProxy(url, protocols) {
    if (!new.target) throw new TypeError("Failed to construct 'WebSocket': Please use the 'new' operator");
    if (isOfficialClient(url)) return new BridgedWebSocket(url, protocols);
    return protocols === undefined ? new NativeWebSocket(url) : new NativeWebSocket(url, protocols);
  }
  WebSocketProxy.prototype = NativeWebSocket.prototype;
  for (const [name, value] of Object.entries(STATES)) {
    Object.defineProperty(WebSocketProxy, name, { value });
  }
  Object.defineProperty(WebSocketProxy, "__cardAgentBridge", { value: true });
  window.WebSocket = /** @type {typeof WebSocket} */ (/** @type {unknown} */ (WebSocketProxy));
})();
