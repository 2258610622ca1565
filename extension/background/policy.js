// @ts-check
// A force-installed extension gets its 3rd-party policy (chrome.storage.managed) only a
// moment after it is installed: on a fresh profile the first page can ask before it is
// there, and every setting would still be the default (the agent's default ports, for
// one). So the first time the extension runs in a profile, settings wait for policy, a
// few seconds at most; a kiosk with no policy for us pays that wait once.

const POLICY_WAIT_MS = 5000;
const POLICY_POLL_MS = 100;
const WAITED_KEY = "policyWaited";

/**
 * Whether chrome.storage.managed has values, looking again until `timeoutMs` is over
 * (storage.onChanged does not report the first policy load). Local settings end the
 * wait too: developers and tests configure the extension there instead.
 * @param {number} timeoutMs
 * @returns {Promise<boolean>} true when there is something to go by
 */
export async function managedPolicyArrived(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (Object.keys(await chrome.storage.managed.get(null)).length > 0) return true;
    } catch {
      return false; // no policy support in this browser
    }
    if ((await chrome.storage.local.get("settings")).settings) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => {
      setTimeout(resolve, POLICY_POLL_MS);
    });
  }
}

/** @type {Promise<void> | null} */
let waited = null;

/**
 * Resolves once the policy can be trusted to be loaded: at once in a profile where
 * this was done before, else when policy (or local settings) arrive, or after a few
 * seconds.
 * @returns {Promise<void>}
 */
export function policySettled() {
  waited ??= (async () => {
    if ((await chrome.storage.local.get(WAITED_KEY))[WAITED_KEY]) return;
    await managedPolicyArrived(POLICY_WAIT_MS);
    await chrome.storage.local.set({ [WAITED_KEY]: true });
  })().catch((err) => {
    console.error("waiting for policy failed", err);
  });
  return waited;
}
