// @ts-check
// Pairing with the agent: the first call that needs the token opens the extension's
// window in pairing mode; a revoked token sends the next call back there once.

import { AgentError, getToken } from "../lib/agent.js";
import { openDialog } from "./dialog.js";

export async function ensurePaired() {
  if (await getToken()) return;
  await openDialog("pair", {});
  if (!(await getToken())) throw new AgentError("not_paired", "not paired");
}

/**
 * A token call; on a revoked token (lib/agent.js forgets it) pair again, once.
 * @template T
 * @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 */
export async function withToken(fn) {
  await ensurePaired();
  try {
    return await fn();
  } catch (err) {
    if (err instanceof AgentError && (err.code === "unauthorized" || err.code === "not_paired")) {
      await ensurePaired();
      return fn();
    }
    throw err;
  }
}

/** The toolbar popup's "重新配对" (the popup has already forgotten the token). */
export function repair() {
  openDialog("pair", {}).catch(() => {});
}
