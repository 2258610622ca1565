// @ts-check
// Content scripts follow the configured origins. The manifest covers the built-in
// origins; here the service worker registers the same scripts for origins added by
// policy or settings, and, once installed, reloads pages on configured origins that
// were opened before the extension existed (a force-installed extension arrives a
// moment after a fresh profile has started loading its first page).

import { loadConfig } from "../lib/config.js";
import { dynamicScripts, manifestOrigins, matchPatterns, sameRegistrations } from "../lib/content-scripts.js";
import { policySettled } from "./policy.js";

/** @typedef {import("../lib/config.js").Settings} Settings */

const STATIC_ORIGINS = manifestOrigins(chrome.runtime.getManifest());
const PROBE_RETRY_MS = 200;

/** @returns {Promise<Settings>} */
async function syncRegistrations() {
  await policySettled();
  const config = await loadConfig();
  const wanted = dynamicScripts(config, STATIC_ORIGINS);
  const registered = await chrome.scripting.getRegisteredContentScripts();
  if (sameRegistrations(registered, wanted)) return config;
  if (registered.length) {
    await chrome.scripting.unregisterContentScripts({ ids: registered.map((s) => s.id) });
  }
  if (wanted.length) await chrome.scripting.registerContentScripts(wanted);
  return config;
}

// Registrations run one after another: several triggers (start, install, a settings
// change) can fire together, and overlapping ones would clash on the script ids.
/** @type {Promise<unknown>} */
let configured = Promise.resolve();

/**
 * Apply the current settings (tests and operators call it as globalThis.reconfigure).
 * @returns {Promise<unknown>}
 */
export function reconfigure() {
  configured = configured
    .catch(() => {})
    .then(syncRegistrations)
    .catch((err) => {
      console.error("registering content scripts failed", err);
    });
  return configured;
}

/**
 * The settings, once policy is loaded (background/policy.js) and the registration in
 * progress, if any, is done.
 * @returns {Promise<Settings>}
 */
export async function settledConfig() {
  await policySettled();
  await configured.catch(() => {});
  return loadConfig();
}

/**
 * Whether a content script of this extension answers in the tab's top frame.
 * @param {number} tabId
 * @returns {Promise<boolean>}
 */
async function hasContentScript(tabId) {
  /** @type {import("../lib/wire.js").AliveProbe} */
  const probe = { type: "alive" };
  for (let attempt = 0; ; attempt++) {
    try {
      if ((await chrome.tabs.sendMessage(tabId, probe, { frameId: 0 })) === true) return true;
    } catch {
      // No receiver: a document that started before the extension was there, or (the
      // second look is for this) one whose scripts are being injected right now.
    }
    if (attempt === 1) return false;
    await new Promise((resolve) => {
      setTimeout(resolve, PROBE_RETRY_MS);
    });
  }
}

/**
 * After installation: reload the tabs on configured origins whose page was loaded
 * without our content scripts, so that their first call already goes through the
 * extension. Tabs that have them (an extension loaded before the first page) are left
 * alone.
 * @returns {Promise<number[]>} the reloaded tab ids
 */
export async function reloadTabsOpenedBeforeInstall() {
  const config = await settledConfig();
  const origins = [...new Set([...config.pageOrigins, ...config.bridgeOrigins])];
  if (!origins.length) return [];
  const tabs = await chrome.tabs.query({ url: matchPatterns(origins) });
  /** @type {number[]} */
  const reloaded = [];
  await Promise.all(
    tabs.map(async (tab) => {
      if (tab.id === undefined || (await hasContentScript(tab.id))) return;
      await chrome.tabs.reload(tab.id);
      reloaded.push(tab.id);
    }),
  );
  return reloaded;
}
