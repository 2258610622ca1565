// @ts-check
// The extension's own window (ui/dialog.html): pairing, and before every signature
// what is signed, tries left, the PIN. One window at a time; pages cannot see it.

import { AgentError } from "../lib/agent.js";
import { loadConfig } from "../lib/config.js";
import { isKnownErrorCode } from "../lib/messages.js";
import { parseDialogCommand } from "../lib/wire.js";

/** @typedef {import("../lib/wire.js").DialogKind} DialogKind */
/** @typedef {import("../lib/wire.js").DialogUpdate} DialogUpdate */
/** @typedef {import("../lib/wire.js").SignRequest} SignRequest */
/** @typedef {import("../lib/wire.js").CardEvent} CardEvent */

/**
 * @typedef {object} OpenDialog
 * @property {string} id
 * @property {DialogKind} kind
 * @property {SignRequest | Record<string, never>} request
 * @property {number | null} windowId
 * @property {chrome.runtime.Port | null} port
 * @property {(result: unknown) => void} resolve
 * @property {(err: AgentError) => void} reject
 * @property {ReturnType<typeof setTimeout> | undefined} timer
 */

/** @type {OpenDialog | null} */
let current = null;

/** @param {{ok: true, result: unknown} | {ok: false, code: string}} outcome */
function finish(outcome) {
  const dialog = current;
  if (!dialog) return;
  current = null;
  clearTimeout(dialog.timer);
  if (outcome.ok) dialog.resolve(outcome.result);
  else dialog.reject(new AgentError(outcome.code, outcome.code));
  if (dialog.windowId !== null) chrome.windows.remove(dialog.windowId).catch(() => {});
}

/**
 * Open the window and wait for its outcome (the window's result, or an AgentError:
 * `user_cancelled`, a card code, `dialog_busy` when another window is open).
 * @param {DialogKind} kind
 * @param {SignRequest | Record<string, never>} request
 * @returns {Promise<unknown>}
 */
export async function openDialog(kind, request) {
  if (current) throw new AgentError("dialog_busy", "dialog busy");
  const config = await loadConfig();
  if (current) throw new AgentError("dialog_busy", "dialog busy");
  const id = crypto.randomUUID();
  /** @type {(result: unknown) => void} */
  let resolve = () => {};
  /** @type {(err: AgentError) => void} */
  let reject = () => {};
  const done = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  /** @type {OpenDialog} */
  const dialog = { id, kind, request, windowId: null, port: null, resolve, reject, timer: undefined };
  dialog.timer = setTimeout(() => finish({ ok: false, code: "user_cancelled" }), (config.dialogTimeoutS + 30) * 1000);
  current = dialog;
  try {
    const win = await chrome.windows.create({
      url: chrome.runtime.getURL(`ui/dialog.html#${id}`),
      type: "popup",
      width: 560,
      height: 820,
      focused: true,
    });
    if (current === dialog) dialog.windowId = win?.id ?? null;
  } catch (err) {
    finish({ ok: false, code: "internal_error" });
    throw err;
  }
  return done;
}

/** @param {number} windowId */
export function onWindowRemoved(windowId) {
  if (current && current.windowId === windowId) finish({ ok: false, code: "user_cancelled" });
}

/**
 * A card event reaches the open window too (card pulled while it is open).
 * @param {CardEvent} event
 */
export function notifyDialog(event) {
  /** @type {DialogUpdate} */
  const update = { type: "event", event };
  current?.port?.postMessage(update);
}

/** @param {chrome.runtime.Port} port */
export function onDialogPort(port) {
  const sender = port.sender;
  if (!sender || sender.id !== chrome.runtime.id || !sender.url?.startsWith(chrome.runtime.getURL("ui/"))) {
    port.disconnect();
    return;
  }
  port.onMessage.addListener(async (/** @type {unknown} */ raw) => {
    const msg = parseDialogCommand(raw, isKnownErrorCode);
    if (!msg) return;
    const dialog = current;
    if (!dialog || msg.id !== dialog.id) {
      /** @type {DialogUpdate} */
      const gone = { type: "gone" };
      port.postMessage(gone);
      return;
    }
    if (msg.type === "get") {
      dialog.port = port;
      const config = await loadConfig();
      /** @type {DialogUpdate} */
      const update = {
        type: "request",
        kind: dialog.kind,
        request: dialog.request,
        settings: { keypad: config.keypad, dialogTimeoutS: config.dialogTimeoutS, clientName: config.clientName },
      };
      port.postMessage(update);
    } else if (msg.type === "done") {
      finish({ ok: true, result: msg.result });
    } else if (msg.type === "cancel") {
      finish({ ok: false, code: msg.code });
    }
    // "ping": nothing to do; receiving it keeps this worker alive.
  });
  port.onDisconnect.addListener(() => {
    if (current && current.port === port) finish({ ok: false, code: "user_cancelled" });
  });
}
