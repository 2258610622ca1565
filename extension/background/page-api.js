// @ts-check
// The page API (docs/extension.md): requests from pages on `pageOrigins`, relayed by
// the content script on the "page" port. Every check uses what the browser says about
// the sender (port.sender.origin, frameId), never what a page claims.

import { AgentError, agent, getToken } from "../lib/agent.js";
import { zhMessage } from "../lib/messages.js";
import { prepareSign } from "../lib/sign-request.js";
import { pageMethod, parsePortMessage } from "../lib/wire.js";
import { openDialog } from "./dialog.js";
import { subscribe } from "./events.js";
import { ensurePaired, withToken } from "./pairing.js";
import { settledConfig } from "./registration.js";

/** @typedef {import("../lib/wire.js").PageMethod} PageMethod */
/** @typedef {import("../lib/wire.js").PortAnswer} PortAnswer */
/** @typedef {import("../lib/wire.js").WireError} WireError */
/** @typedef {import("../lib/wire.js").Capabilities} Capabilities */

/**
 * @param {unknown} err
 * @returns {WireError}
 */
export function wireError(err) {
  if (!(err instanceof AgentError)) console.error(err);
  const code = err instanceof AgentError ? err.code : "internal_error";
  const details = err instanceof AgentError ? err.details : {};
  return { code, message: zhMessage(code, details), details };
}

/** @type {Record<PageMethod, (origin: string, params: unknown) => Promise<unknown>>} */
const HANDLERS = {
  async ping() {
    return { extension: chrome.runtime.getManifest().version };
  },
  async status() {
    const status = await agent.status();
    return {
      agent: { version: status.version, reader_present: status.reader_present, card_present: status.card_present },
      paired: Boolean(await getToken()),
    };
  },
  async pair() {
    await ensurePaired();
    return { paired: true };
  },
  async card() {
    return withToken(() => agent.card());
  },
  async certificates() {
    return withToken(() => agent.certificates());
  },
  async pinStatus() {
    return withToken(() => agent.pin());
  },
  async sign(origin, params) {
    const request = await prepareSign(origin, params);
    return openDialog("sign", request);
  },
  async endSession() {
    if (!(await getToken())) return { ended: false };
    return agent.endSession();
  },
};

/**
 * What this sender may use: the page API only in the top frame of a tab on
 * `pageOrigins`; the bridge on `bridgeOrigins` (frames too).
 * @param {chrome.runtime.MessageSender} sender
 * @returns {Promise<Capabilities>}
 */
export async function capabilities(sender) {
  const { pageOrigins, bridgeOrigins } = await settledConfig();
  const origin = sender.origin ?? "";
  const topFrame = sender.frameId === 0 && Boolean(sender.tab);
  return { pageApi: topFrame && pageOrigins.includes(origin), bridge: bridgeOrigins.includes(origin) };
}

/** @param {chrome.runtime.Port} port */
export function onPagePort(port) {
  const sender = port.sender ?? {};
  const origin = sender.origin ?? "";
  const allowed = capabilities(sender);
  /** @param {PortAnswer} reply */
  const answer = (reply) => {
    try {
      port.postMessage(reply);
    } catch {
      // the page went away meanwhile
    }
  };
  port.onMessage.addListener(async (/** @type {unknown} */ raw) => {
    const msg = parsePortMessage(raw);
    if (!msg) return;
    const caps = await allowed;
    if (msg.method === "hello") {
      answer({ id: msg.id, ok: true, result: caps });
      if (caps.pageApi) subscribe(port);
      return;
    }
    if (!caps.pageApi) {
      answer({ id: msg.id, ok: false, error: wireError(new AgentError("not_allowed", "")) });
      return;
    }
    const call = /** @type {import("../lib/wire.js").PortCall} */ (msg); // not "hello"
    const method = pageMethod(call.method);
    try {
      if (!method) throw new AgentError("invalid_input", "unknown method");
      answer({ id: call.id, ok: true, result: await HANDLERS[method](origin, call.params) });
    } catch (err) {
      answer({ id: call.id, ok: false, error: wireError(err) });
    }
  });
}
