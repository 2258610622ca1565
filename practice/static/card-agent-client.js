// Page-side client for the 电子口岸卡助手 extension's page API (docs/extension.md).
// Plain ES2020 module, no dependencies: integrators may copy it.
//
// Requests go to the extension's content script with window.postMessage; answers
// are accepted only from this very window (event.source === window), from this
// page's origin, on our channel, for a request id we issued. An iframe can neither
// answer in the extension's name nor see the answers. The page never sees the token.

const CHANNEL = "card-agent/v1";

export class CardAgentError extends Error {
  constructor(code, message, details = {}) {
    super(message || code);
    this.code = code;
    this.details = details;
  }
}

export class CardAgentClient {
  #pending = new Map();
  #listeners = new Set();

  constructor() {
    window.addEventListener("message", (event) => this.#onMessage(event));
  }

  #onMessage(event) {
    if (event.source !== window || event.origin !== window.location.origin) return;
    const data = event.data;
    if (!data || typeof data !== "object" || data.channel !== CHANNEL) return;
    if (data.type === "event" && typeof data.event === "string") {
      for (const fn of this.#listeners) fn(data.event);
      return;
    }
    if (data.type !== "response") return;
    const entry = this.#pending.get(data.id);
    if (!entry) return;
    this.#pending.delete(data.id);
    clearTimeout(entry.timer);
    if (data.ok) entry.resolve(data.result);
    else {
      const err = data.error || {};
      entry.reject(new CardAgentError(err.code || "error", err.message, err.details || {}));
    }
  }

  /** Card and reader events: "card_removed", "card_inserted", ... */
  onEvent(fn) {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /**
   * Call a page API method: ping, status, pair, card, certificates, pinStatus,
   * sign({purpose, title, text | data}), endSession. Rejects with CardAgentError.
   * timeoutMs 0 = wait as long as it takes (sign waits for the person at the kiosk).
   */
  call(method, params = {}, { timeoutMs = 0 } = {}) {
    const id = crypto.randomUUID();
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null };
      if (timeoutMs > 0) {
        entry.timer = setTimeout(() => {
          this.#pending.delete(id);
          reject(new CardAgentError("no_extension", "未检测到电子口岸卡助手扩展。"));
        }, timeoutMs);
      }
      this.#pending.set(id, entry);
      window.postMessage({ channel: CHANNEL, type: "request", id, method, params }, window.location.origin);
    });
  }

  /** True when the extension answers on this page (it stays silent on other sites). */
  async available(timeoutMs = 2500) {
    try {
      await this.call("ping", {}, { timeoutMs });
      return true;
    } catch {
      return false;
    }
  }
}
