// Settings: built-in defaults < chrome.storage.local "settings" (tests, developers)
// < chrome.storage.managed (kiosk policy). Managed values always win, so a kiosk's
// policy cannot be overridden from inside the browser profile.

export const DEFAULTS = Object.freeze({
  agentUrl: "http://127.0.0.1:17321",
  compatUrl: "ws://127.0.0.1:61232",
  // The practice Single Window (`card-agent practice`) and the Single Window itself.
  pageOrigins: [
    "http://localhost:17380",
    "https://www.singlewindow.cn",
    "https://swapp.singlewindow.cn",
    "https://app.singlewindow.cn",
  ],
  bridgeOrigins: [
    "http://localhost:17380",
    "https://www.singlewindow.cn",
    "https://swapp.singlewindow.cn",
    "https://app.singlewindow.cn",
  ],
  keypad: "auto",
  dialogTimeoutS: 180,
  clientName: "电子口岸卡助手 (Chromium 扩展)",
});

const ORIGIN_RE = /^(https?):\/\/([a-z0-9.-]+|\[[0-9a-f:]+\])(:[0-9]{1,5})?$/;

// An origin as the browser writes it: lowercase scheme and host, no path, no slash.
export function isExactOrigin(value) {
  return typeof value === "string" && ORIGIN_RE.test(value) && !value.includes("*");
}

// The agent must be reached by IP, never as "localhost": the extension holds host
// permissions for http://localhost/* (pages it serves), and Chromium sends no Origin
// header on GET requests to hosts an extension has permissions for, while the agent
// binds tokens to the Origin that paired. Without host permissions on 127.0.0.1 the
// requests are ordinary CORS requests carrying Origin: chrome-extension://<id>.
function isLoopbackUrl(value, schemes) {
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

function clean(raw) {
  const out = {};
  if (!raw || typeof raw !== "object") return out;
  if (isLoopbackUrl(raw.agentUrl, ["http:"])) out.agentUrl = raw.agentUrl.replace(/\/$/, "");
  if (isLoopbackUrl(raw.compatUrl, ["ws:"])) out.compatUrl = raw.compatUrl.replace(/\/$/, "");
  for (const key of ["pageOrigins", "bridgeOrigins"]) {
    if (Array.isArray(raw[key])) out[key] = raw[key].filter(isExactOrigin);
  }
  if (["auto", "on", "off"].includes(raw.keypad)) out.keypad = raw.keypad;
  if (Number.isInteger(raw.dialogTimeoutS) && raw.dialogTimeoutS >= 30) {
    out.dialogTimeoutS = Math.min(raw.dialogTimeoutS, 900);
  }
  if (typeof raw.clientName === "string" && raw.clientName.trim()) {
    out.clientName = raw.clientName.trim().slice(0, 64);
  }
  return out;
}

export async function loadConfig() {
  let managed = {};
  try {
    managed = await chrome.storage.managed.get(null);
  } catch {
    managed = {}; // no policy schema support (e.g. some test set-ups)
  }
  const { settings } = await chrome.storage.local.get("settings");
  return { ...DEFAULTS, ...clean(settings), ...clean(managed) };
}
