// @ts-check
// Which content scripts run where. The manifest declares them for the built-in
// origins (the Single Window and the practice site), so they are in place for the very
// first document of a fresh profile; origins added by policy or settings get the same
// scripts registered at run time (chrome.scripting), which a page can only get once the
// service worker has run (docs/extension.md, "Which pages get the bridge").

export const ISOLATED_SCRIPT = "content/isolated.js";
export const BRIDGE_SCRIPT = "content/bridge-main.js";
export const DYNAMIC_IDS = Object.freeze({ isolated: "card-agent-isolated", bridge: "card-agent-bridge-main" });

/**
 * @typedef {object} ScriptRegistration the fields of chrome.scripting.RegisteredContentScript we use
 * @property {string} id
 * @property {string[]} matches
 * @property {string[]} js
 * @property {"document_start"} runAt
 * @property {boolean} allFrames
 * @property {"ISOLATED" | "MAIN"} world
 * @property {boolean} persistAcrossSessions
 */

/**
 * The origins of the manifest's `content_scripts` match patterns ("https://host/*").
 * @param {{content_scripts?: {matches?: string[]}[]}} manifest
 * @returns {Set<string>}
 */
export function manifestOrigins(manifest) {
  const origins = new Set();
  for (const entry of manifest.content_scripts ?? []) {
    for (const pattern of entry.matches ?? []) {
      const match = /^(https?:\/\/[^/*]+)\/\*$/.exec(pattern);
      if (match) origins.add(match[1]);
    }
  }
  return origins;
}

/**
 * @param {readonly string[]} origins
 * @returns {string[]}
 */
export function matchPatterns(origins) {
  return origins.map((origin) => `${origin}/*`);
}

/**
 * The scripts to register at run time: the configured origins the manifest does not
 * already cover (registering those again would run every script twice).
 * @param {{pageOrigins: readonly string[], bridgeOrigins: readonly string[]}} config
 * @param {Set<string>} staticOrigins
 * @returns {ScriptRegistration[]}
 */
export function dynamicScripts(config, staticOrigins) {
  const extra = (/** @type {readonly string[]} */ origins) => [...new Set(origins)].filter((o) => !staticOrigins.has(o)).sort();
  const all = extra([...config.pageOrigins, ...config.bridgeOrigins]);
  const bridged = extra(config.bridgeOrigins);
  /** @type {ScriptRegistration[]} */
  const scripts = [];
  if (all.length) {
    scripts.push({
      id: DYNAMIC_IDS.isolated,
      matches: matchPatterns(all),
      js: [ISOLATED_SCRIPT],
      runAt: "document_start",
      allFrames: true, // the bridge serves frames too; the page API only the top frame
      world: "ISOLATED",
      persistAcrossSessions: true,
    });
  }
  if (bridged.length) {
    scripts.push({
      id: DYNAMIC_IDS.bridge,
      matches: matchPatterns(bridged),
      js: [BRIDGE_SCRIPT],
      runAt: "document_start",
      allFrames: true,
      world: "MAIN",
      persistAcrossSessions: true,
    });
  }
  return scripts;
}

/**
 * Whether what is registered already is what we want: re-registering on every service
 * worker start would leave a moment with no scripts at all, and a page loading then
 * would miss them.
 * @param {readonly {id: string, matches?: string[], js?: string[], runAt?: string, allFrames?: boolean,
 *   world?: string, persistAcrossSessions?: boolean}[]} registered
 * @param {readonly ScriptRegistration[]} wanted
 * @returns {boolean}
 */
export function sameRegistrations(registered, wanted) {
  /** @param {(typeof registered)[number]} s */
  const key = (s) =>
    JSON.stringify([
      s.id,
      [...(s.matches ?? [])].sort(),
      s.js ?? [],
      s.runAt ?? "document_idle",
      Boolean(s.allFrames),
      s.world ?? "ISOLATED",
      s.persistAcrossSessions ?? true,
    ]);
  const a = registered.map(key).sort();
  const b = wanted.map(key).sort();
  return a.length === b.length && a.every((k, i) => k === b[i]);
}
