// @ts-check
// Every message that crosses a boundary inside the extension, written down once:
//
//   page ──window.postMessage (PAGE_CHANNEL)──> content/isolated.js ──"page" port──> service worker
//   page's WebSocket wrapper (content/bridge-main.js, MAIN world)
//        ──window.postMessage (BRIDGE_CHANNEL)──> content/isolated.js ──"bridge" port (one per socket)──> service worker
//   ui/dialog.js ──"dialog" port──> service worker        ui/popup.js ──runtime message──> service worker
//
// The types below are what each side sends; the parse* functions are how the service
// worker reads what arrives (anything else is dropped). Content scripts cannot import
// modules (the manifest loads them as classic scripts), so they use these definitions
// as JSDoc types only and check no more than what they route on (channel, type, id or
// socket id); every decision is taken here, in the service worker, on what the browser
// says about the sender.

/** Page API channel (page <-> content script). */
export const PAGE_CHANNEL = "card-agent/v1";
/** Single Window bridge channel (MAIN-world socket wrapper <-> content script). */
export const BRIDGE_CHANNEL = "card-agent-bridge/v1";
/** @typedef {typeof PAGE_CHANNEL} PageChannel */
/** @typedef {typeof BRIDGE_CHANNEL} BridgeChannel */

/** Port names (chrome.runtime.connect({name})). */
export const PORT_PAGE = "page";
export const PORT_BRIDGE = "bridge";
export const PORT_DIALOG = "dialog";

/** A page's request id: a string of 1 to this many characters. */
export const MAX_REQUEST_ID_LENGTH = 64;
/** A socket id chosen by the MAIN-world wrapper. */
export const MAX_SOCKET_ID_LENGTH = 64;
const MAX_INTERNAL_ID_LENGTH = 80;
const MAX_URL_LENGTH = 2048;

/** Card and reader events the agent streams and pages receive. */
export const CARD_EVENTS = Object.freeze(
  /** @type {const} */ (["card_inserted", "card_removed", "card_reset", "reader_added", "reader_removed"]),
);
/** @typedef {typeof CARD_EVENTS[number]} CardEvent */

/** Page API methods (docs/extension.md, "The page API"). */
export const PAGE_METHODS = Object.freeze(
  /** @type {const} */ (["ping", "status", "pair", "card", "certificates", "pinStatus", "sign", "endSession"]),
);
/** @typedef {typeof PAGE_METHODS[number]} PageMethod */

/** Error codes of the extension itself, next to the agent's (lib/vocabulary.json). */
export const EXTENSION_ERROR_CODES = Object.freeze(
  /** @type {const} */ ([
    "not_paired",
    "agent_unreachable",
    "user_cancelled",
    "dialog_busy",
    "not_allowed",
    "extension_restarted",
  ]),
);

// --- shapes ------------------------------------------------------------------------------

/**
 * An error as pages see it: `message` is Chinese, for people; programs switch on `code`.
 * @typedef {{code: string, message: string, details: Record<string, unknown>}} WireError
 */

// page <-> content script (window.postMessage, PAGE_CHANNEL)
/** @typedef {{channel: PageChannel, type: "request", id: string, method: string, params?: unknown}} PageRequest */
/**
 * @typedef {{channel: PageChannel, type: "response", id: string, ok: true, result: unknown}
 *   | {channel: PageChannel, type: "response", id: string, ok: false, error: WireError}} PageResponse
 */
/** @typedef {{channel: PageChannel, type: "ready"}} PageReady */
/** @typedef {{channel: PageChannel, type: "event", event: CardEvent}} PageEvent */

// MAIN-world socket wrapper <-> content script (window.postMessage, BRIDGE_CHANNEL)
/**
 * @typedef {{channel: BridgeChannel, type: "open", sid: string, url: string}
 *   | {channel: BridgeChannel, type: "send", sid: string, data: string}
 *   | {channel: BridgeChannel, type: "close", sid: string, code?: number, reason?: string}} BridgeFrameToExtension
 */
/**
 * "native": this page is not bridged; the wrapper hands the page the browser's own socket.
 * @typedef {({channel: BridgeChannel, sid: string} & SocketEvent)
 *   | {channel: BridgeChannel, sid: string, type: "native"}} BridgeFrameToPage
 */

// content script <-> service worker, "page" port
/** @typedef {{pageApi: boolean, bridge: boolean}} Capabilities */
/** @typedef {{id: string, method: "hello"}} PortHello */
/** @typedef {{id: string, method: string, params: unknown}} PortCall */
/**
 * @typedef {{id: string, ok: true, result: unknown} | {id: string | null, ok: false, error: WireError}} PortAnswer
 */
/** @typedef {{event: CardEvent}} PortEvent */

// content script <-> service worker, "bridge" port (one per page socket)
/**
 * @typedef {{type: "open", url: string}
 *   | {type: "send", data: string}
 *   | {type: "close", code: number, reason: string}} SocketCommand
 */
/**
 * @typedef {{type: "opened"}
 *   | {type: "message", data: string}
 *   | {type: "error"}
 *   | {type: "closed", code: number, reason: string, wasClean: boolean}} SocketEvent
 */

// extension window (ui/dialog.js) <-> service worker, "dialog" port
/** @typedef {"pair" | "sign"} DialogKind */
/**
 * What the window shows before a signature (built by lib/sign-request.js).
 * @typedef {{origin: string, purpose: string, purposeText: string, title: string, size: number,
 *   sha256: string, data: string, preview: string | null}} SignRequest
 */
/** @typedef {{keypad: "auto" | "on" | "off", dialogTimeoutS: number, clientName: string}} DialogSettings */
/**
 * @typedef {{type: "get", id: string}
 *   | {type: "done", id: string, result: unknown}
 *   | {type: "cancel", id: string, code: string}
 *   | {type: "ping", id: string}} DialogCommand
 */
/**
 * @typedef {{type: "request", kind: DialogKind, request: SignRequest | Record<string, never>, settings: DialogSettings}
 *   | {type: "gone"}
 *   | {type: "event", event: CardEvent}} DialogUpdate
 */

// toolbar popup -> service worker, chrome.runtime.sendMessage
/** @typedef {{type: "pair"}} PopupMessage */

// service worker -> content script, chrome.tabs.sendMessage: "is a content script of
// this extension alive in this tab?" (answered with true).
/** @typedef {{type: "alive"}} AliveProbe */

// --- reading what arrives ------------------------------------------------------------------

/**
 * @param {unknown} value
 * @returns {value is Record<string, unknown>}
 */
function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * @param {unknown} value
 * @param {number} max
 * @returns {value is string}
 */
function isId(value, max) {
  return typeof value === "string" && value.length > 0 && value.length <= max;
}

/**
 * A card event name, or null.
 * @param {unknown} value
 * @returns {CardEvent | null}
 */
export function cardEvent(value) {
  return CARD_EVENTS.find((event) => event === value) ?? null;
}

/**
 * A page port message from the content script.
 * @param {unknown} msg
 * @returns {PortHello | PortCall | null}
 */
export function parsePortMessage(msg) {
  if (!isObject(msg) || !isId(msg.id, MAX_INTERNAL_ID_LENGTH) || typeof msg.method !== "string") return null;
  if (msg.method === "hello") return { id: msg.id, method: "hello" };
  if (msg.method.length > 32) return null;
  return { id: msg.id, method: msg.method, params: msg.params };
}

/**
 * A known page API method, or null.
 * @param {string} method
 * @returns {PageMethod | null}
 */
export function pageMethod(method) {
  return PAGE_METHODS.find((m) => m === method) ?? null;
}

/**
 * The close code a page may ask for: 1000, or an application code 3000-4999 (the only
 * ones WebSocket.close() accepts from scripts); anything else closes normally.
 * @param {unknown} code
 * @returns {number}
 */
export function closeCode(code) {
  return code === 1000 || (Number.isInteger(code) && Number(code) >= 3000 && Number(code) <= 4999) ? Number(code) : 1000;
}

/**
 * A bridge port message from the content script.
 * @param {unknown} msg
 * @returns {SocketCommand | null}
 */
export function parseSocketCommand(msg) {
  if (!isObject(msg)) return null;
  switch (msg.type) {
    case "open":
      return typeof msg.url === "string" && msg.url.length <= MAX_URL_LENGTH ? { type: "open", url: msg.url } : null;
    case "send":
      return typeof msg.data === "string" ? { type: "send", data: msg.data } : null;
    case "close":
      return {
        type: "close",
        code: closeCode(msg.code),
        reason: typeof msg.reason === "string" ? msg.reason.slice(0, 123) : "",
      };
    default:
      return null;
  }
}

/**
 * A message from the extension's window.
 * @param {unknown} msg
 * @param {(code: string) => boolean} isKnownCode which error codes a cancel may carry
 * @returns {DialogCommand | null}
 */
export function parseDialogCommand(msg, isKnownCode) {
  if (!isObject(msg) || !isId(msg.id, MAX_REQUEST_ID_LENGTH)) return null;
  const id = msg.id;
  switch (msg.type) {
    case "get":
      return { type: "get", id };
    case "ping":
      return { type: "ping", id };
    case "done":
      return { type: "done", id, result: msg.result };
    case "cancel":
      return {
        type: "cancel",
        id,
        code: typeof msg.code === "string" && isKnownCode(msg.code) ? msg.code : "user_cancelled",
      };
    default:
      return null;
  }
}

/**
 * A message from the toolbar popup.
 * @param {unknown} msg
 * @returns {PopupMessage | null}
 */
export function parsePopupMessage(msg) {
  return isObject(msg) && msg.type === "pair" ? { type: "pair" } : null;
}
