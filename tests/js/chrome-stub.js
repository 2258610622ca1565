// @ts-check
// chrome.storage for the unit tests: node has no extension APIs, so the few modules
// that read settings or the token get this in-memory stand-in (the real thing is
// covered by tests/e2e in Chromium).

/**
 * @param {Record<string, unknown>} [local]
 * @param {Record<string, unknown>} [managed]
 */
export function installChrome(local = {}, managed = {}) {
  const areas = { local: { ...local }, managed: { ...managed } };
  /** @param {Record<string, unknown>} area */
  const storage = (area) => ({
    /** @param {string | string[] | null} keys */
    async get(keys) {
      if (keys === null) return { ...area };
      const names = Array.isArray(keys) ? keys : [keys];
      return Object.fromEntries(names.filter((k) => k in area).map((k) => [k, area[k]]));
    },
    /** @param {Record<string, unknown>} values */
    async set(values) {
      Object.assign(area, values);
    },
    /** @param {string} key */
    async remove(key) {
      delete area[key];
    },
  });
  /** @type {any} */ (globalThis).chrome = { storage: { local: storage(areas.local), managed: storage(areas.managed) } };
  return areas;
}
