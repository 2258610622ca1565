// @ts-check
// The extension's own window: pairing, then what is about to be signed, tries left,
// the PIN (typed here, never in the page), the last-try confirmation, the signature.
// The PIN goes from this window's input straight to the agent and is then cleared.

import { AgentError, agent, getToken, setToken } from "../lib/agent.js";
import { siteName, zhMessage } from "../lib/messages.js";
import { PORT_DIALOG } from "../lib/wire.js";

/** @typedef {import("../lib/wire.js").DialogCommand} DialogCommand */
/** @typedef {import("../lib/wire.js").DialogUpdate} DialogUpdate */
/** @typedef {import("../lib/wire.js").DialogKind} DialogKind */
/** @typedef {import("../lib/wire.js").DialogSettings} DialogSettings */
/** @typedef {import("../lib/wire.js").SignRequest} SignRequest */
/** @typedef {import("../lib/agent.js").AgentAnswer} AgentAnswer */
/** @typedef {{pin: AgentAnswer, card: AgentAnswer, certs: AgentAnswer}} CardFacts */

/**
 * An element of dialog.html (they are all there: a missing one is a bug, not a state).
 * @param {string} id
 * @returns {HTMLElement}
 */
function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`dialog.html has no #${id}`);
  return el;
}
/** @param {string} id @returns {HTMLInputElement} */
const input$ = (id) => /** @type {HTMLInputElement} */ ($(id));
/** @param {string} id @returns {HTMLButtonElement} */
const button$ = (id) => /** @type {HTMLButtonElement} */ ($(id));

/**
 * @param {unknown} err
 * @returns {{code: string, details: Record<string, unknown>}}
 */
function errorOf(err) {
  return err instanceof AgentError ? { code: err.code, details: err.details } : { code: "internal_error", details: {} };
}

const requestId = window.location.hash.slice(1);
const port = chrome.runtime.connect({ name: PORT_DIALOG });
/** @param {DialogCommand} command */
const tell = (command) => port.postMessage(command);
/** @type {SignRequest | null} */
let request = null;
/** @type {DialogKind | null} */
let kind = null;
/** @type {DialogSettings | null} */
let settings = null;
let needPin = true;
let busy = false;
let cardGone = false;

/** @param {string} view */
function show(view) {
  for (const el of document.querySelectorAll(".view")) {
    if (el instanceof HTMLElement) el.hidden = el.id !== `view-${view}`;
  }
  // Nothing left to time out on the final views.
  $("countdown").hidden = ["done", "paired", "error", "blocked"].includes(view);
}

/** @param {string} message @param {string} [title] */
function fatal(message, title = "无法继续") {
  $("fatal-title").textContent = title;
  $("fatal-message").textContent = message;
  show("error");
}

const PULLED_TEXT = "为保护您的信息，本次签名已取消，卡密码的验证状态已清除。请回到办理页面，重新插卡后从登录开始。本窗口即将关闭。";

/** @param {string} [code] */
function cancel(code = "user_cancelled") {
  tell({ type: "cancel", id: requestId, code });
  setTimeout(() => window.close(), 200);
}

/** @param {number} ms */
const sleep = (ms) =>
  new Promise((resolve) => {
    setTimeout(resolve, ms);
  });

// --- countdown: an abandoned window cancels itself ---------------------------------------

let deadline = 0;
/** @param {number} seconds */
function startCountdown(seconds) {
  deadline = Date.now() + seconds * 1000;
  const tick = () => {
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    $("countdown").textContent = `无操作 ${left} 秒后本窗口将自动取消。`;
    if (left <= 0) cancel("user_cancelled");
    else setTimeout(tick, 1000);
  };
  tick();
  const extend = () => {
    deadline = Math.max(deadline, Date.now() + Math.min(seconds, 60) * 1000);
  };
  document.addEventListener("keydown", extend);
  document.addEventListener("pointerdown", extend);
}

// --- pairing ------------------------------------------------------------------------------

async function pair() {
  show("pair");
  for (;;) {
    let req;
    try {
      req = await agent.pair(settings?.clientName || "电子口岸卡助手");
    } catch (err) {
      const { code, details } = errorOf(err);
      $("pair-status").textContent = zhMessage(code, details);
      await sleep(3000);
      continue;
    }
    $("pair-code").textContent = req.code;
    $("pair-command").textContent = `card-agent pair approve ${req.code}`;
    $("pair-status").textContent = "等待工作人员批准……";
    for (;;) {
      await sleep(1000);
      let answer;
      try {
        answer = await agent.claim(req.request_id);
      } catch (err) {
        const { code, details } = errorOf(err);
        if (code === "pairing_error") break; // expired or unknown: a new code
        $("pair-status").textContent = zhMessage(code, details);
        continue;
      }
      if (answer && answer.status === "approved" && answer.token) {
        await setToken(answer.token);
        return;
      }
    }
  }
}

// --- signing ------------------------------------------------------------------------------

/** @param {unknown} number */
function maskNumber(number) {
  const s = String(number || "");
  return s.length <= 4 ? s : `${"*".repeat(s.length - 4)}${s.slice(-4)}`;
}

/** @param {string} hex */
function groupDigest(hex) {
  return (hex.match(/.{1,8}/g) ?? []).join(" ");
}

/** @returns {Promise<CardFacts>} */
async function loadCard() {
  for (;;) {
    try {
      const [pin, card, certs] = await Promise.all([agent.pin(), agent.card(), agent.certificates()]);
      cardGone = false;
      return { pin, card, certs };
    } catch (err) {
      const { code } = errorOf(err);
      if (code === "unauthorized" || code === "not_paired") {
        await pair();
        continue;
      }
      if (["card_missing", "card_removed", "card_reset", "card_timeout", "card_io_error"].includes(code)) {
        $("card-title").textContent = "请插入电子口岸卡";
        $("card-message").textContent = zhMessage("card_missing");
        show("card");
        await sleep(1500);
        continue;
      }
      throw err;
    }
  }
}

/** @param {{tries_left?: unknown}} pin */
function renderTries(pin) {
  const el = $("tries");
  if (typeof pin.tries_left !== "number") {
    el.textContent = "";
    return;
  }
  el.textContent = `密码还可尝试 ${pin.tries_left} 次`;
  el.classList.toggle("low", pin.tries_left <= 3);
  if (pin.tries_left <= 1) showLastTry();
}

function showLastTry() {
  $("last-try").hidden = false;
  updateConfirm();
}

function updateConfirm() {
  const lastTryOpen = !$("last-try").hidden;
  button$("confirm").disabled = busy || cardGone || (needPin && lastTryOpen && !input$("last-try-confirm").checked);
}

/** @param {string} message */
function setError(message) {
  // Next to the PIN field while it is shown, else above the buttons.
  const target = needPin ? $("sign-error") : $("other-error");
  for (const el of [$("sign-error"), $("other-error")]) {
    el.textContent = el === target ? message || "" : "";
    el.hidden = el !== target || !message;
  }
}

/** @param {boolean} value */
function setNeedPin(value) {
  needPin = value;
  $("pin-section").hidden = !value;
  $("pin-not-needed").hidden = value;
  $("sign-lead").textContent = value
    ? "下列网站请求使用您的电子口岸卡签名。请核对无误后输入卡密码，再点“确认签名”。"
    : "下列网站请求使用您的电子口岸卡签名。请核对无误后点“确认签名”。";
  if (value) setTimeout(() => $("pin").focus(), 0);
  updateConfirm();
}

function buildKeypad() {
  const pad = $("keypad");
  const digits = [..."0123456789"];
  const random = new Uint32Array(digits.length);
  crypto.getRandomValues(random);
  for (let i = digits.length - 1; i > 0; i--) {
    const j = random[i] % (i + 1);
    [digits[i], digits[j]] = [digits[j], digits[i]];
  }
  pad.replaceChildren();
  /** @param {string} label @param {() => void} fn @param {string} [cls] */
  const key = (label, fn, cls) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    if (cls) b.className = cls;
    b.addEventListener("click", fn);
    pad.append(b);
  };
  const input = input$("pin");
  digits.slice(0, 9).forEach((d) => key(d, () => { if (input.value.length < 16) input.value += d; }));
  key("清除", () => { input.value = ""; }, "fn");
  key(digits[9], () => { if (input.value.length < 16) input.value += digits[9]; });
  key("退格", () => { input.value = input.value.slice(0, -1); }, "fn");
}

/** @param {boolean} on */
function toggleKeypad(on) {
  const pad = $("keypad");
  pad.hidden = !on;
  if (on) buildKeypad(); // shuffled anew each time it opens
  $("keypad-toggle").textContent = on ? "隐藏屏幕数字键盘" : "使用屏幕数字键盘";
}

/** @param {SignRequest} doc @param {CardFacts} facts */
function renderSign(doc, { pin, card, certs }) {
  const cert = certs.sign;
  $("f-site").textContent = siteName(doc.origin);
  $("f-origin").textContent = doc.origin;
  $("f-purpose").textContent = doc.purposeText;
  $("f-title").textContent = doc.title;
  $("f-digest").textContent = groupDigest(doc.sha256);
  $("f-holder").textContent = cert.subject.cn || card.holder_name;
  $("f-company").textContent = cert.subject.ou || card.company_name;
  const until = cert.not_after.slice(0, 10);
  $("f-cert").textContent = `编号 ${cert.certificate_number}，卡号 ${maskNumber(card.card_number)}，有效期至 ${until}`;
  const days = Math.floor(cert.days_left);
  const warn = $("cert-warning");
  if (days < 0) {
    warn.textContent = "此卡的证书已过期，签名将不被单一窗口接受。请联系电子口岸办理证书更新。";
    warn.hidden = false;
  } else if (days < 30) {
    warn.textContent = `此卡的证书将在 ${days} 天后到期，请尽快到电子口岸办理证书更新。`;
    warn.hidden = false;
  }
  if (doc.preview) {
    $("preview").textContent = doc.preview;
    $("preview-box").hidden = false;
  }
  if (pin.blocked) {
    show("blocked");
    return;
  }
  renderTries(pin);
  setNeedPin(doc.purpose === "login" || !pin.verified);
  show("sign");
}

/** @param {string} pin */
function validPinFormat(pin) {
  return /^[\x21-\x7e]{6,16}$/.test(pin);
}

async function confirmSign() {
  if (busy || !request) return;
  setError("");
  busy = true;
  updateConfirm();
  try {
    if (needPin) {
      const input = input$("pin");
      const pin = input.value;
      if (!validPinFormat(pin)) {
        setError("密码应为 6 至 16 位字母或数字，请重新输入（本次未消耗尝试次数）。");
        return;
      }
      const confirmLast = !$("last-try").hidden && input$("last-try-confirm").checked;
      try {
        await agent.verifyPin(pin, confirmLast);
      } catch (err) {
        input.value = "";
        const { code, details } = errorOf(err);
        if (code === "pin_incorrect") {
          renderTries({ tries_left: details.tries_left });
          input$("last-try-confirm").checked = false;
          setError(zhMessage(code, details));
          input.focus();
          return;
        }
        if (code === "pin_tries_low") {
          renderTries({ tries_left: details.tries_left });
          showLastTry();
          setError("请先阅读上面的提示，勾选“我确认使用最后一次机会”后再确认。");
          return;
        }
        if (code === "pin_blocked") {
          show("blocked");
          return;
        }
        throw err;
      } finally {
        input.value = "";
      }
    }
    let result;
    try {
      result = await agent.sign({
        purpose: request.purpose,
        title: request.title,
        data: request.data,
        signature_format: "raw",
      });
    } catch (err) {
      if (errorOf(err).code === "session_required") {
        setNeedPin(true);
        const pin = await agent.pin().catch(() => null);
        if (pin) renderTries(pin);
        setError("请输入卡密码后再确认。");
        return;
      }
      throw err;
    }
    show("done");
    tell({ type: "done", id: requestId, result });
    setTimeout(() => window.close(), 700);
  } catch (err) {
    const { code, details } = errorOf(err);
    if (["card_removed", "card_missing", "card_changed", "card_reset"].includes(code)) {
      fatal(code === "card_changed" ? zhMessage(code) : PULLED_TEXT, "电子口岸卡已拔出");
      setTimeout(() => cancel(code), 2500);
      return;
    }
    setError(zhMessage(code, details));
  } finally {
    busy = false;
    updateConfirm();
  }
}

// --- wiring -------------------------------------------------------------------------------

const wantKeypad = () =>
  settings?.keypad === "on" || (settings?.keypad === "auto" && window.matchMedia("(pointer: coarse)").matches);

port.onMessage.addListener(async (/** @type {DialogUpdate} */ msg) => {
  if (msg.type === "gone") {
    window.close();
    return;
  }
  if (msg.type === "event") {
    if (msg.event === "card_removed" && kind === "sign") {
      cardGone = true;
      updateConfirm();
      fatal(PULLED_TEXT, "电子口岸卡已拔出");
      setTimeout(() => cancel("card_removed"), 2500);
    }
    return;
  }
  kind = msg.kind;
  settings = msg.settings;
  startCountdown(settings.dialogTimeoutS || 180);
  if (wantKeypad()) toggleKeypad(true);
  try {
    if (msg.kind === "pair") {
      if (!(await getToken())) await pair();
      show("paired");
      tell({ type: "done", id: requestId, result: { paired: true } });
      setTimeout(() => window.close(), 700);
      return;
    }
    request = /** @type {SignRequest} */ (msg.request);
    if (!(await getToken())) await pair();
    renderSign(request, await loadCard());
  } catch (err) {
    const { code, details } = errorOf(err);
    fatal(zhMessage(code, details));
  }
});

tell({ type: "get", id: requestId });
setInterval(() => tell({ type: "ping", id: requestId }), 10000);

$("confirm").addEventListener("click", confirmSign);
$("cancel").addEventListener("click", () => cancel());
for (const b of document.querySelectorAll("button.close")) b.addEventListener("click", () => cancel());
$("pin").addEventListener("keydown", (e) => {
  if (e.key === "Enter") confirmSign();
});
$("last-try-confirm").addEventListener("change", updateConfirm);
$("keypad-toggle").addEventListener("click", () => toggleKeypad($("keypad").hidden));
