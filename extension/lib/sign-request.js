// @ts-check
// A page's `sign` call, checked and turned into what the extension's window shows
// before the PIN: the document is hashed here, in the extension, so pages cannot ask
// for a bare digest and the visitor sees what is signed.

import { AgentError } from "./agent.js";
import { b64ToBytes, bytesToB64, sha256Hex } from "./bytes.js";
import { purposeText } from "./messages.js";
import { isPurpose } from "./vocabulary.js";

/** @typedef {import("./wire.js").SignRequest} SignRequest */

/** The agent's default `security.max_data_bytes`. */
export const MAX_DATA_BYTES = 1024 * 1024;
const MAX_TITLE_LENGTH = 200;
const PREVIEW_LENGTH = 2000;

/** @param {string} what */
function invalid(what) {
  return new AgentError("invalid_input", what);
}

/**
 * @param {string} origin the requesting page's origin, as the browser reported it
 * @param {unknown} params `{purpose, title, text}` or `{purpose, title, data}` (Base64)
 * @returns {Promise<SignRequest>}
 */
export async function prepareSign(origin, params) {
  if (!params || typeof params !== "object" || Array.isArray(params)) throw invalid("params");
  const p = /** @type {Record<string, unknown>} */ (params);
  const { purpose, title, text, data } = p;
  if (!isPurpose(purpose)) throw invalid("purpose");
  if (typeof title !== "string" || !title.trim() || title.length > MAX_TITLE_LENGTH) throw invalid("title");
  /** @type {Uint8Array<ArrayBuffer>} */
  let bytes;
  if (typeof text === "string" && data === undefined) {
    bytes = new TextEncoder().encode(text);
  } else if (typeof data === "string" && text === undefined) {
    if (data.length > Math.ceil(MAX_DATA_BYTES / 3) * 4) throw new AgentError("payload_too_large", "data");
    try {
      bytes = b64ToBytes(data);
    } catch {
      throw invalid("data");
    }
  } else {
    throw invalid("give exactly one of text or data");
  }
  if (bytes.length === 0) throw invalid("empty document");
  if (bytes.length > MAX_DATA_BYTES) throw new AgentError("payload_too_large", "data");
  return {
    origin,
    purpose,
    purposeText: purposeText(purpose),
    title: title.trim(),
    size: bytes.length,
    sha256: await sha256Hex(bytes),
    data: bytesToB64(bytes),
    preview: typeof text === "string" ? text.slice(0, PREVIEW_LENGTH) : null,
  };
}
