// @ts-check
// Card events for pages (card pulled mid-flow, a new card): one WebSocket to the
// agent's /v1/events while any page with the page API is open, fanned out to those
// pages and to the extension's window.

import { agentWsUrl, getToken } from "../lib/agent.js";
import { cardEvent } from "../lib/wire.js";
import { notifyDialog } from "./dialog.js";

/** @typedef {import("../lib/wire.js").PortEvent} PortEvent */

const RECONNECT_MS = 2000;

/** @type {Set<chrome.runtime.Port>} */
const subscribers = new Set();
/** @type {WebSocket | null} */
let socket = null;

/** @param {chrome.runtime.Port} port a page port with the page API */
export function subscribe(port) {
  subscribers.add(port);
  port.onDisconnect.addListener(() => subscribers.delete(port));
  watchEvents();
}

/** @param {unknown} data */
function onFrame(data) {
  if (typeof data !== "string") return;
  /** @type {unknown} */
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  const event = cardEvent(msg && typeof msg === "object" ? /** @type {{type?: unknown}} */ (msg).type : null);
  if (!event) return;
  /** @type {PortEvent} */
  const out = { event };
  for (const port of subscribers) {
    try {
      port.postMessage(out);
    } catch {
      subscribers.delete(port);
    }
  }
  notifyDialog(event);
}

export async function watchEvents() {
  if (socket || !subscribers.size) return;
  const token = await getToken();
  if (!token || socket) return;
  const ws = new WebSocket(await agentWsUrl("/v1/events"));
  socket = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
  ws.onmessage = (event) => onFrame(event.data);
  ws.onclose = () => {
    if (socket === ws) socket = null;
    if (subscribers.size) setTimeout(watchEvents, RECONNECT_MS);
  };
}

/** Paired (or forgotten): reopen the stream with the current token. */
export function restartEvents() {
  const old = socket;
  socket = null;
  old?.close();
  watchEvents();
}
