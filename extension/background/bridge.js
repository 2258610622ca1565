// @ts-check
// The Single Window bridge: a page's official-client WebSocket (content/bridge-main.js)
// -> card-agent's official-protocol endpoint, one "bridge" port per page socket. Text
// frames are relayed both ways, BLOCKTXT chunks included.

import { withPageOrigin } from "../lib/compat-frames.js";
import { parseSocketCommand } from "../lib/wire.js";
import { settledConfig } from "./registration.js";

/** @typedef {import("../lib/wire.js").SocketEvent} SocketEvent */

/** @param {chrome.runtime.Port} port */
export function onBridgePort(port) {
  const origin = port.sender?.origin ?? "";
  /** @type {WebSocket | null} */
  let ws = null;
  let opening = false;
  /** @param {SocketEvent} event */
  const tell = (event) => {
    try {
      port.postMessage(event);
    } catch {
      // the page is gone
    }
  };
  port.onMessage.addListener(async (/** @type {unknown} */ raw) => {
    const msg = parseSocketCommand(raw);
    if (!msg) return;
    if (msg.type === "open") {
      if (ws || opening) return;
      opening = true;
      const config = await settledConfig();
      if (!config.bridgeOrigins.includes(origin)) {
        tell({ type: "closed", code: 1006, reason: "", wasClean: false });
        port.disconnect();
        return;
      }
      const socket = new WebSocket(config.compatUrl);
      ws = socket;
      socket.onopen = () => tell({ type: "opened" });
      socket.onmessage = (event) => {
        if (typeof event.data === "string") tell({ type: "message", data: event.data });
      };
      socket.onerror = () => tell({ type: "error" });
      socket.onclose = (event) => {
        tell({ type: "closed", code: event.code, reason: event.reason, wasClean: event.wasClean });
        try {
          port.disconnect();
        } catch {
          // already gone
        }
      };
    } else if (msg.type === "send") {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(withPageOrigin(msg.data, origin));
    } else if (ws) {
      ws.close(msg.code, msg.reason);
    }
  });
  port.onDisconnect.addListener(() => {
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  });
}
