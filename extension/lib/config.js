// @ts-check
// Settings: built-in defaults < chrome.storage.local "settings" (tests, developers)
// < chrome.storage.managed (kiosk policy, managed_schema.json). Managed values always
// win, so a kiosk's policy cannot be overridden from inside the browser profile.

/**
 * @typedef {object} Settings
 * @property {string} agentUrl the agent's API, http://127.0.0.1:PORT (by IP, see isLoopbackUrl)
 * @property {string} compatUrl card-agent's official-protocol endpoint, ws://127.0.0.1:PORT
 * @property {readonly string[]} pageOrigins exact origins that get the page API
 * @property {readonly string[]} bridgeOrigins exact origins whose official-client socket is bridged
 * @property {"auto" | "on" | "off"} keypad shuffled on-screen keypad in the extension's window
 * @property {number} dialogTimeoutS an unanswered window cancels itself after this long
 * @property {string} clientName shown to the operator when pairing
 */

/** The Single Window origins the manifest's content scripts cover from the first page on. */
export const SINGLE_WINDOW_ORIGINS = Object.freeze([
  "https://www.singlewindow.cn",
  "https://swapp.singlewindow.cn",
  "https://app.singlewindow.cn",
]);
/** The practice Single Window (`card-agent practice`), also covered by the manifest. */
export const PRACTICE_ORIGIN = "http://localhost:17380";

/** @type {Readonly<Settings>} */
export const DEFAULTS = Object.freeze({
  agentUrl: "http://127.0.0.1:17321",
  compatUrl: "ws://127.0.0.1:61232",
  pageOrigins: Object.freeze([PRACTICE_ORIGIN, ...SINGLE_WINDOW_ORIGINS]),
  bridgeOrigins: Object.freeze([PRACTICE_ORIGIN, ...SINGLE_WINDOW_ORIGINS]),
  keypad: "auto",
  dialogTimeoutS: 180,
  clientName: "电子口岸卡助手 (Chromium 扩展)",
});

const ORIGIN_RE = /^(https?):\/\/([a-z0-9.-]+|\[[0-9a-f:]+\])(:[0-9]{1,5})?$/;

/**
 * An origin as the browser writes it: lowercase scheme and host, no path, no slash.
 * @param {unknown} value
 * @returns {value is string}
 */
export function isExactOrigin(value) {
  return typeof value === "string" && ORIGIN_RE.test(value) && !value.includes("*");
}

/**
 * The agent must be reached by IP, never as "localhost": the extension holds host
 * permissions for http://localhost/* (pages it serves), and Chromium sends no Origin
 * header on GET requests to hosts an extension has permissions for, while the agent
 * binds tokens to the Origin that paired. Without host permissions on 127.0.0.1 the
 * requests are ordinary CORS requests carrying Origin: chrome-extension://<id>.
 * @param {unknown} value
 * @param {readonly string[]} schemes e.g. ["http:"]
 * @returns {value is string}
 */
export function isLoopbackUrl(value, schemes) {
  if (typeof value !== "string") return false;
  try {
    const url = new URL(value);
    return (
      schemes.includes(url.protocol) &&
      ["127.0.0.1", "[::1]"].includes(url.hostname) &&
      (url.pathname === "/" || url.pathname === "") &&
      !url.search &&
      !url.hash
    );
  } catch {
    return false;
  }
}

/**
 * The usable part of a settings object from storage or policy; anything malformed is
 * left out (and so falls back to the layer below), never half-applied.
 * @param {unknown} raw
 * @returns {Partial<Settings>}
 */
export function cleanSettings(raw) {
  /** @type {Partial<Settings>} */
  const out = {};
  if (!raw || typeof raw !== "object") return out;
  const r = /** @type {Record<string, unknown>} */ (raw);
  if (isLoopbackUrl(r.agentUrl, ["http:"])) out.agentUrl = r.agentUrl.replace(/\/$/, "");
  if (isLoopbackUrl(r.compatUrl, ["ws:"])) out.compatUrl = r.compatUrl.replace(/\/$/, "");
  for (const key of /** @type {const} */ (["pageOrigins", "bridgeOrigins"])) {
    const list = r[key];
    if (Array.isArray(list)) out[key] = Object.freeze(list.filter(isExactOrigin));
  }
  if (r.keypad === "auto" || r.keypad === "on" || r.keypad === "off") out.keypad = r.keypad;
  const timeout = r.dialogTimeoutS;
  if (typeof timeout === "number" && Number.isInteger(timeout) && timeout >= 30) {
    out.dialogTimeoutS = Math.min(timeout, 900);
  }
  if (typeof r.clientName === "string" && r.clientName.trim()) {
    out.clientName = r.clientName.trim().slice(0, 64);
  }
  return out;
}

/**
 * Defaults, then local settings, then policy.
 * @param {unknown} local chrome.storage.local "settings"
 * @param {unknown} managed chrome.storage.managed (all keys)
 * @returns {Settings}
 */
export function mergeSettings(local, managed) {
  return { ...DEFAULTS, ...cleanSettings(local), ...cleanSettings(managed) };
}

/** @returns {Promise<Settings>} */
export async function loadConfig() {
  /** @type {unknown} */
  let managed = {};
  try {
    managed = await chrome.storage.managed.get(null);
  } catch {
    managed = {}; // no policy support in this browser
  }
  const { settings } = await chrome.storage.local.get("settings");
  return mergeSettings(settings, managed);
}
