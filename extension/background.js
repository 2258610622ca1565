// @ts-check
// Service worker: the only place that holds the agent token (lib/agent.js) and decides
// which pages may do what. Each job has its module under background/; this file only
// wires Chromium's events to them, synchronously at start (a listener added later
// would miss the event that woke the worker).

import { parsePopupMessage, PORT_BRIDGE, PORT_DIALOG, PORT_PAGE } from "./lib/wire.js";
import { onBridgePort } from "./background/bridge.js";
import { onDialogPort, onWindowRemoved } from "./background/dialog.js";
import { restartEvents } from "./background/events.js";
import { onPagePort } from "./background/page-api.js";
import { repair } from "./background/pairing.js";
import { reconfigure, reloadTabsOpenedBeforeInstall } from "./background/registration.js";

// Tests and operators (DevTools on the service worker) apply new settings with this.
/** @type {typeof globalThis & {reconfigure?: typeof reconfigure}} */ (globalThis).reconfigure = reconfigure;
reconfigure();

chrome.runtime.onInstalled.addListener((details) => {
  if (details.reason !== "install") return;
  reloadTabsOpenedBeforeInstall().catch((err) => console.error("reloading open pages failed", err));
});
chrome.runtime.onStartup.addListener(() => reconfigure());
chrome.storage.onChanged.addListener((changes, area) => {
  if (area === "managed" || (area === "local" && changes.settings)) reconfigure();
  if (area === "local" && changes.token) restartEvents();
});
chrome.windows.onRemoved.addListener(onWindowRemoved);

chrome.runtime.onConnect.addListener((port) => {
  if (port.name === PORT_DIALOG) onDialogPort(port);
  else if (port.name === PORT_PAGE && port.sender?.tab) onPagePort(port);
  else if (port.name === PORT_BRIDGE && port.sender?.tab) onBridgePort(port);
  else port.disconnect();
});

chrome.runtime.onMessage.addListener((msg, sender) => {
  if (sender.id === chrome.runtime.id && !sender.tab && parsePopupMessage(msg)) repair();
  return false;
});
