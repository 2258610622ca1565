// @ts-check
// Chinese texts for the person at the kiosk: every error code (the agent's, from
// lib/vocabulary.json, and the extension's own, lib/wire.js) and every signing purpose.
// Programs switch on `code`; tests/js/messages.test.js keeps these tables complete
// against the vocabulary the agent exports.

import { AGENT_ERROR_CODES, PURPOSES } from "./vocabulary.js";
import { EXTENSION_ERROR_CODES } from "./wire.js";

/** @type {Readonly<Record<string, string>>} */
export const ERROR_TEXTS = Object.freeze({
  // the extension's own
  not_paired: "本机的电子口岸卡助手尚未配对，请联系工作人员。",
  agent_unreachable: "无法连接本机的读卡服务（card-agent），请联系工作人员。",
  user_cancelled: "您已取消。",
  dialog_busy: "另一个确认窗口尚未完成，请先完成或关闭它。",
  not_allowed: "此网站未被允许使用电子口岸卡。",
  extension_restarted: "电子口岸卡助手已重新启动，请重试。",
  // the agent's (docs/api.md)
  host_forbidden: "读卡服务地址配置有误，请联系工作人员。",
  origin_forbidden: "读卡服务不接受来自此扩展的请求，请联系工作人员检查配置。",
  unauthorized: "扩展的配对已失效，需要重新配对，请联系工作人员。",
  invalid_input: "请求内容有误。",
  unsupported_media_type: "请求格式有误，请联系工作人员。",
  payload_too_large: "要签名的文件过大。",
  not_found: "读卡服务不支持此操作，请联系工作人员。",
  method_not_allowed: "读卡服务不支持此操作，请联系工作人员。",
  busy: "读卡器正忙，请稍候再试。",
  timeout: "读卡操作超时，请重试。",
  session_required: "需要重新输入卡密码。",
  pin_incorrect: "密码错误。",
  pin_blocked: "卡密码已被锁定，无法使用此卡签名。请联系电子口岸发卡机构解锁。",
  pin_tries_low: "密码只剩最后的尝试机会，需要您明确确认。",
  pin_format: "密码应为 6 至 16 位字母或数字。",
  reader_service_down: "读卡器服务未运行，请联系工作人员。",
  reader_missing: "未连接读卡器，请联系工作人员。",
  reader_busy: "另一个程序正在使用卡片，请稍候再试。",
  card_missing: "未检测到电子口岸卡，请将卡插入读卡器。",
  card_removed: "电子口岸卡已被拔出。为保护您的信息，本次办理已结束，请重新插卡后从登录开始。",
  card_reset: "卡片已被重置，请从登录重新开始。",
  card_changed: "读卡器中换了一张卡。为保护您的信息，请从登录重新开始。",
  card_timeout: "卡片没有响应，请重新插卡。",
  card_io_error: "与卡片通信失败，请重新插卡。",
  unsupported_card: "这不是可用的电子口岸卡。",
  card_error: "卡片拒绝了此操作。",
  signature_invalid: "卡片生成的签名无法通过校验，未签署任何内容。请联系工作人员。",
  audit_unavailable: "本机无法记录签名日志，为安全起见未返回签名。请联系工作人员。",
  pairing_error: "配对失败，请重试。",
  internal_error: "发生内部错误，请联系工作人员。",
});

/** What each signing purpose is called in the extension's window. */
/** @type {Readonly<Record<string, string>>} */
export const PURPOSE_TEXTS = Object.freeze({
  seal: "制作电子印章并生成协议",
  agreement: "签署网上协议",
  data_authorisation: "授权提供企业数据",
  application: "确认投保申请",
  receipt: "确认收悉电子保单",
  login: "卡介质登录",
  other: "其他签名",
});

const KNOWN_CODES = new Set([...AGENT_ERROR_CODES, ...EXTENSION_ERROR_CODES]);

/**
 * An error code the agent or the extension defines.
 * @param {string} code
 * @returns {boolean}
 */
export function isKnownErrorCode(code) {
  return KNOWN_CODES.has(code);
}

/**
 * @param {string} code
 * @param {Record<string, unknown>} [details]
 * @returns {string}
 */
export function zhMessage(code, details = {}) {
  const triesLeft = details.tries_left;
  if (code === "pin_incorrect" && typeof triesLeft === "number" && Number.isInteger(triesLeft)) {
    return `密码错误，还可尝试 ${triesLeft} 次。`;
  }
  return Object.hasOwn(ERROR_TEXTS, code) ? ERROR_TEXTS[code] : `操作失败（${code}）。`;
}

/**
 * The purpose as the visitor reads it.
 * @param {string} purpose one of PURPOSES
 * @returns {string}
 */
export function purposeText(purpose) {
  return PURPOSES.includes(purpose) && Object.hasOwn(PURPOSE_TEXTS, purpose) ? PURPOSE_TEXTS[purpose] : purpose;
}

/**
 * A name a visitor recognises, shown next to the exact origin the browser reported.
 * @param {string} origin
 * @returns {string}
 */
export function siteName(origin) {
  try {
    const { protocol, hostname } = new URL(origin);
    if (protocol === "https:" && (hostname === "singlewindow.cn" || hostname.endsWith(".singlewindow.cn"))) {
      return "中国国际贸易单一窗口";
    }
    if (["localhost", "127.0.0.1", "[::1]"].includes(hostname)) return "本机网站（练习或培训用）";
  } catch {
    // not a URL: the origin is shown on its own
  }
  return "其他网站（请确认您认识它）";
}
