// @ts-check
// Toolbar popup for kiosk staff: is the agent reachable, is a card in, are we paired.
import { AgentError, agent, clearToken, getToken } from "../lib/agent.js";
import { zhMessage } from "../lib/messages.js";

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`popup.html has no #${id}`);
  return el;
}
$("version").textContent = `版本 ${chrome.runtime.getManifest().version} · ${chrome.runtime.id}`;

async function refresh() {
  $("paired").textContent = (await getToken()) ? "已配对" : "未配对";
  try {
    const status = await agent.status();
    $("agent").textContent = `运行中（${status.version}）`;
    $("card").textContent = status.card_present ? "已插入" : status.reader_present ? "未插卡" : "无读卡器";
  } catch (err) {
    $("agent").textContent = zhMessage(err instanceof AgentError ? err.code : "internal_error");
  }
}

$("repair").addEventListener("click", async () => {
  await clearToken();
  /** @type {import("../lib/wire.js").PopupMessage} */
  const message = { type: "pair" };
  await chrome.runtime.sendMessage(message);
  window.close();
});
refresh();
