// @ts-check
// Frames the bridge relays to card-agent's official-protocol endpoint (docs/compat.md).

const SIGNING_METHOD = /_Spc.*Sign|Sign.*_?Random/;

/**
 * The endpoint sees the extension's origin on the socket; so that its audit log still
 * names the page, a signing request without a title gets one naming the page's origin
 * (card-agent's `args.title` extension). Anything else passes unchanged, chunked
 * (BLOCKTXT) frames and frames that are not JSON included.
 * @param {string} text the frame as the page sent it
 * @param {string} origin the page's origin, as the browser reported it
 * @returns {string}
 */
export function withPageOrigin(text, origin) {
  if (!text.startsWith("{")) return text;
  /** @type {unknown} */
  let request;
  try {
    request = JSON.parse(text);
  } catch {
    return text;
  }
  if (!request || typeof request !== "object") return text;
  const r = /** @type {Record<string, unknown>} */ (request);
  const method = typeof r._method === "string" ? r._method : "";
  const args = r.args;
  if (!SIGNING_METHOD.test(method) || !args || typeof args !== "object" || Array.isArray(args)) return text;
  const a = /** @type {Record<string, unknown>} */ (args);
  if (a.title) return text;
  a.title = `${method.replace(/^[^_]+_/, "")}（${origin}）`;
  return JSON.stringify(r);
}
