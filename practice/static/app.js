// The practice Single Window flow (see the 2023 user's guide): card login, the pending
// policy notice, contact details and the application form (forced reading time), seal
// making, agreement, data authorisation, submission, approval and receipt. Every
// signature is sent to this site's server, which verifies it against the card's
// certificate. Two ways to reach the card: the extension's page API (default) or the
// official client protocol (?mode=official), which the extension bridges.

import { CardAgentClient } from "./card-agent-client.js";
import { OfficialClient } from "./official-client.js";

const $ = (id) => document.getElementById(id);
const MODE = new URLSearchParams(window.location.search).get("mode") === "official" ? "official" : "extension";
const PULLED = ["card_removed", "card_changed", "card_reset"];
const STEPS = ["login", "notice", "contact", "seal", "agreement", "authorise", "submit", "result", "done", "bye"];

class PracticeError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// --- ways to the card ---------------------------------------------------------------------

class ExtensionCard {
  constructor() {
    this.api = new CardAgentClient();
    this.pagePin = false;
  }
  available() {
    return this.api.available();
  }
  onEvent(fn) {
    this.api.onEvent(fn);
  }
  async status() {
    const s = await this.api.call("status", {}, { timeoutMs: 5000 });
    return { cardPresent: s.agent.card_present, readerPresent: s.agent.reader_present };
  }
  async login(challenge) {
    const certs = await this.api.call("certificates"); // pairs first if needed
    const card = await this.api.call("card");
    const sig = await this.api.call("sign", { purpose: "login", title: "单一窗口卡介质登录", text: challenge });
    return {
      certificate_pem: certs.sign.pem,
      signature: sig.signature,
      algorithm: sig.algorithm,
      certificate_number: sig.certificate_number,
      card: {
        holder_name: card.holder_name,
        company_name: card.company_name,
        uscc: card.uscc,
        card_number: card.card_number,
      },
    };
  }
  async sign(doc) {
    const sig = await this.api.call("sign", { purpose: doc.purpose, title: doc.title, text: doc.text });
    return { signature: sig.signature, algorithm: sig.algorithm, certificate_number: sig.certificate_number };
  }
  async end() {
    try {
      await this.api.call("endSession", {}, { timeoutMs: 5000 });
    } catch {
      // nothing to end
    }
  }
}

function pemFromBase64(b64) {
  const body = b64.replace(/\s+/g, "").match(/.{1,64}/g).join("\n");
  return `-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n`;
}

class OfficialCard {
  constructor(url) {
    this.client = new OfficialClient(url);
    this.pagePin = true; // the official protocol carries the PIN from the page
    this.pin = null;
  }
  async available() {
    try {
      await this.client.connect(4000);
      return true;
    } catch {
      return false;
    }
  }
  onEvent() {}
  async status() {
    return { cardPresent: null, readerPresent: null };
  }
  async call(method, args) {
    try {
      return await this.client.call(method, args);
    } catch (err) {
      throw new PracticeError(err.code || "official_error", err.message);
    }
  }
  async login(challenge, pin) {
    this.pin = pin;
    const cert = await this.call("cus-sec_SpcGetSignCertAsPEM", {});
    const cardId = await this.call("cus-sec_SpcGetCardID", {});
    const holder = await this.call("cus-sec_SpcGetUName", {});
    const company = await this.call("cus-sec_SpcGetEntName", {});
    const sig = await this.call("cus-sec_SpcSignRandom", { random: challenge, passwd: pin });
    const certNo = await this.call("cus-sec_SpcGetCertNo", {});
    return {
      certificate_pem: pemFromBase64(cert[0]),
      signature: sig[0],
      certificate_number: certNo[0] || null,
      card: { holder_name: holder[0] || "", company_name: company[0] || "", uscc: "", card_number: cardId[0] || "" },
    };
  }
  async sign(doc) {
    // purpose and title: card-agent's extension of the protocol, for its audit log
    // (docs/compat.md); the Windows client ignores unknown arguments.
    const sig = await this.call("cus-sec_SpcSignDataAsPEM", {
      inData: doc.text,
      passwd: this.pin,
      purpose: doc.purpose,
      title: doc.title,
    });
    return { signature: sig[0], certificate_number: sig[1] || null };
  }
  async end() {
    this.pin = null;
    try {
      await this.call("cus-sec_SpcClearEnv", {});
    } catch {
      // already closed
    }
    this.client.close();
  }
}

// --- page plumbing ----------------------------------------------------------------------

const state = { config: null, card: null, login: null, current: "login", pulled: false };

async function api(path, body) {
  const init = body === undefined
    ? { method: "GET" }
    : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, { ...init, credentials: "same-origin" });
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = new PracticeError(payload.error?.code || `http_${response.status}`, payload.error?.message || "请求失败");
    err.fields = payload.fields || {};
    throw err;
  }
  return payload;
}

function showAlert(message) {
  $("alert").textContent = message || "";
  $("alert").hidden = !message;
}

function setBusy(message) {
  $("busy-text").textContent = message || "";
  $("busy").hidden = !message;
}

function showStep(name) {
  state.current = name;
  for (const section of document.querySelectorAll("section.step")) section.hidden = section.dataset.step !== name;
  const index = STEPS.indexOf(name);
  for (const li of document.querySelectorAll("#progress li")) {
    const i = STEPS.indexOf(li.dataset.for);
    li.classList.toggle("done", i < index || name === "bye");
    li.classList.toggle("current", i === index);
  }
  showAlert("");
  window.scrollTo(0, 0);
}

function cardPulled(code) {
  if (!state.login || state.pulled) return;
  state.pulled = true;
  state.login = null;
  setBusy("");
  if (code === "card_changed") {
    $("pulled-text").textContent = "读卡器中换了一张卡。为保护您的信息，本次办理已中止。请用同一张卡从登录重新开始。";
  }
  $("pulled-modal").hidden = false;
}

function handleError(err) {
  setBusy("");
  if (PULLED.includes(err.code)) {
    cardPulled(err.code);
    return;
  }
  if (err.code === "user_cancelled") {
    showAlert("您已取消签名。需要继续时，请再次点击按钮。");
    return;
  }
  if (err.code === "no_visit" || err.code === "login_required") {
    showAlert(err.message);
    restart();
    return;
  }
  showAlert(err.message || "操作失败，请重试。");
}

const WAIT_TEXT = "请在弹出的“电子口岸卡助手”窗口中核对内容、输入卡密码并确认……";

async function signStep(step) {
  const doc = await api(`/api/document/${step}`);
  setBusy(MODE === "official" ? "正在用电子口岸卡签名……" : WAIT_TEXT);
  const sig = await state.card.sign(doc);
  setBusy("正在核验签名……");
  const result = await api(`/api/sign/${step}`, sig);
  setBusy("");
  return result;
}

function guard(button, fn) {
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    button.disabled = true;
    showAlert("");
    try {
      await fn();
    } catch (err) {
      handleError(err);
    } finally {
      button.disabled = false;
      refreshButtons();
    }
  });
}

function refreshButtons() {
  $("confirm-apply").disabled = !($("read-agree").checked && state.readDone);
  $("agree-btn").disabled = !$("agree-terms").checked;
  $("authorise-btn").disabled = !$("agree-data").checked;
}

// --- step 1: login ----------------------------------------------------------------------

async function pollCardStatus() {
  if (state.current !== "login" || MODE === "official" || !state.extension) return;
  const el = $("card-status");
  try {
    const s = await state.card.status();
    if (!s.readerPresent) {
      el.textContent = "未检测到读卡器，请联系工作人员。";
      el.className = "card-status bad";
    } else if (!s.cardPresent) {
      el.textContent = "读卡器已连接，请插入电子口岸卡。";
      el.className = "card-status bad";
    } else {
      el.textContent = "✓ 已检测到电子口岸卡，可以登录。";
      el.className = "card-status good";
    }
  } catch (err) {
    el.textContent = err.message || "无法连接读卡服务。";
    el.className = "card-status bad";
  }
}

async function login() {
  let pin;
  if (state.card.pagePin) {
    pin = $("pin-input").value;
    if (!/^[\x21-\x7e]{6,16}$/.test(pin)) {
      showAlert("请正确输入 8 位 IC 卡/Key 密码。");
      return;
    }
  }
  const { challenge } = await api("/api/login/challenge", {});
  setBusy(state.card.pagePin ? "正在用电子口岸卡登录……" : WAIT_TEXT);
  let signed;
  try {
    signed = await state.card.login(challenge, pin);
  } finally {
    $("pin-input").value = "";
  }
  setBusy("正在核验登录签名……");
  const result = await api("/api/login", signed);
  setBusy("");
  state.login = result;
  state.pulled = false;
  $("user-box").textContent = `${result.holder} · ${result.company}`;
  $("user-box").hidden = false;
  $("n-company").textContent = result.company;
  $("n-uscc").textContent = result.uscc || "（未读取）";
  $("n-holder").textContent = result.holder;
  $("n-valid").textContent = `${result.not_after}（还有 ${result.days_left} 天）`;
  if (result.warning) {
    $("cert-warning-text").textContent = result.warning;
    $("cert-warning").hidden = false;
    return;
  }
  showStep("notice");
}

// --- step 3: contact and the application form ------------------------------------------

function contactValues() {
  const form = $("contact-form");
  return { name: form.name.value, mobile: form.mobile.value, email: form.email.value };
}

function showFieldErrors(fields = {}) {
  for (const el of document.querySelectorAll("[data-error]")) el.textContent = fields[el.dataset.error] || "";
}

async function onReadAgree() {
  state.readDone = false;
  refreshButtons();
  if (!$("read-agree").checked) return;
  try {
    await api("/api/contact", contactValues());
  } catch (err) {
    $("read-agree").checked = false;
    showFieldErrors(err.fields);
    if (!err.fields || !Object.keys(err.fields).length) handleError(err);
    return;
  }
  showFieldErrors({});
  const doc = await api("/api/document/application");
  $("doc-modal-title").textContent = doc.title;
  $("doc-modal-text").textContent = doc.text;
  $("doc-modal").hidden = false;
  const close = $("doc-modal-close");
  close.disabled = true;
  const opened = Date.now();
  close.dataset.openedAt = String(opened); // lets staff tooling (and tests) check the rule
  const until = opened + state.config.read_seconds * 1000;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left > 0) {
      $("doc-modal-count").textContent = `请仔细阅读，${left} 秒后可以关闭`;
      close.textContent = `关闭（${left}）`;
      setTimeout(tick, 250);
    } else {
      $("doc-modal-count").textContent = "已阅读满规定时间，可以关闭。";
      close.textContent = "关闭";
      close.disabled = false;
    }
  };
  tick();
}

// --- wiring ---------------------------------------------------------------------------

async function restart() {
  await api("/api/start", {}).catch(() => {});
  state.login = null;
  state.pulled = false;
  state.readDone = false;
  $("user-box").hidden = true;
  $("pulled-modal").hidden = true;
  $("cert-warning").hidden = true;
  for (const id of ["read-agree", "agree-terms", "agree-data"]) $(id).checked = false;
  $("contact-form").reset();
  showFieldErrors({});
  showStep("login");
  pollCardStatus();
}

async function main() {
  state.config = await api("/api/config");
  for (const el of document.querySelectorAll(".read-seconds")) el.textContent = String(state.config.read_seconds);
  state.card = MODE === "official" ? new OfficialCard(state.config.official_client_url) : new ExtensionCard();
  if (MODE === "official") {
    $("mode-note").textContent = "（官方客户端协议模式）";
    $("page-pin").hidden = false;
    $("login-tip").textContent = "此模式模拟单一窗口原有的控件方式：密码在网页上输入，经电子口岸卡助手转交本机读卡服务。";
  }
  state.card.onEvent((event) => {
    if (event === "card_removed") cardPulled("card_removed");
    if (state.current === "login") pollCardStatus();
  });
  showStep("login");
  state.extension = await state.card.available();
  if (!state.extension) {
    $("card-status").textContent = MODE === "official"
      ? "无法连接电子口岸客户端（或电子口岸卡助手），请联系工作人员。"
      : "未检测到电子口岸卡助手扩展，请联系工作人员。";
    $("card-status").className = "card-status bad";
    $("login-btn").disabled = true;
    return;
  }
  if (MODE === "official") {
    $("card-status").textContent = "✓ 已连接电子口岸客户端，请插卡并输入密码。";
    $("card-status").className = "card-status good";
  }
  pollCardStatus();
  setInterval(pollCardStatus, 3000);
}

guard($("login-btn"), login);
$("cert-warning-ok").addEventListener("click", () => {
  $("cert-warning").hidden = true;
  showStep("notice");
});
$("view-policy").addEventListener("click", () => showStep("contact"));
$("read-agree").addEventListener("change", () => onReadAgree().catch(handleError));
$("doc-modal-close").addEventListener("click", () => {
  $("doc-modal").hidden = true;
  state.readDone = true;
  refreshButtons();
});
for (const id of ["agree-terms", "agree-data"]) $(id).addEventListener("change", refreshButtons);
for (const input of $("contact-form").querySelectorAll("input:not([type=checkbox])")) {
  input.addEventListener("input", () => {
    if ($("read-agree").checked) {
      $("read-agree").checked = false; // changed details: read and agree again
      state.readDone = false;
      refreshButtons();
    }
  });
}

guard($("confirm-apply"), async () => {
  await signStep("application");
  $("seal-img").src = `/api/seal.svg?t=${Date.now()}`;
  showStep("seal");
});
guard($("seal-btn"), async () => {
  await signStep("seal");
  const doc = await api("/api/document/agreement");
  $("agreement-text").textContent = doc.text;
  showStep("agreement");
});
guard($("agree-btn"), async () => {
  await signStep("agreement");
  const doc = await api("/api/document/data_authorisation");
  $("authorise-text").textContent = doc.text;
  showStep("authorise");
});
guard($("authorise-btn"), async () => {
  await signStep("data_authorisation");
  const doc = await api("/api/document/submit");
  $("submit-text").textContent = doc.text;
  showStep("submit");
});
guard($("submit-btn"), async () => {
  await signStep("submit");
  showStep("result");
  $("result-pending").hidden = false;
  $("result-approved").hidden = true;
  await new Promise((resolve) => {
    setTimeout(resolve, state.config.approval_delay_s * 1000);
  });
  const result = await api("/api/result");
  if (result.status !== "approved") throw new PracticeError("not_approved", "投保申请尚未审核通过。");
  const doc = await api("/api/document/receipt");
  $("policy-no").textContent = result.policy_number;
  $("policy-company").textContent = result.company;
  $("receipt-text").textContent = doc.text;
  $("result-pending").hidden = true;
  $("result-approved").hidden = false;
});
guard($("receipt-btn"), async () => {
  await signStep("receipt");
  const summary = await api("/api/summary");
  const rows = summary.records.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.step = r.step;
    const cells = [r.label, r.title, r.sha256, r.algorithm, r.certificate_number, r.verified ? "✓ 有效" : "✗ 无效"];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 2 || i === 4) td.className = "mono";
      if (i === 3) td.className = "nowrap";
      if (i === 5) td.className = r.verified ? "ok nowrap" : "error nowrap";
      tr.append(td);
    });
    return tr;
  });
  $("summary-rows").replaceChildren(...rows);
  showStep("done");
});
guard($("finish-btn"), async () => {
  await state.card.end();
  await api("/api/start", {});
  state.login = null;
  $("user-box").hidden = true;
  showStep("bye");
});
$("again-btn").addEventListener("click", () => window.location.reload());
$("pulled-restart").addEventListener("click", () => restart());

main().catch(handleError);
