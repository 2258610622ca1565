// Chinese texts for the agent's error codes (docs/api.md) and the page API's own.
// Programs switch on `code`; these are for the person at the kiosk.

const MESSAGES = {
  not_paired: "本机的电子口岸卡助手尚未配对，请联系工作人员。",
  agent_unreachable: "无法连接本机的读卡服务（card-agent），请联系工作人员。",
  unauthorized: "扩展的配对已失效，需要重新配对，请联系工作人员。",
  origin_forbidden: "读卡服务不接受来自此扩展的请求，请联系工作人员检查配置。",
  host_forbidden: "读卡服务地址配置有误，请联系工作人员。",
  busy: "读卡器正忙，请稍候再试。",
  timeout: "读卡操作超时，请重试。",
  session_required: "需要重新输入卡密码。",
  pin_incorrect: "密码错误。",
  pin_tries_low: "密码只剩最后的尝试机会，需要您明确确认。",
  pin_blocked: "卡密码已被锁定，无法使用此卡签名。请联系电子口岸发卡机构解锁。",
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
  pairing_error: "配对失败，请重试。",
  invalid_input: "请求内容有误。",
  payload_too_large: "要签名的文件过大。",
  user_cancelled: "您已取消。",
  dialog_busy: "另一个确认窗口尚未完成，请先完成或关闭它。",
  not_allowed: "此网站未被允许使用电子口岸卡。",
  extension_restarted: "电子口岸卡助手已重新启动，请重试。",
  internal_error: "发生内部错误，请联系工作人员。",
};

export function zhMessage(code, details = {}) {
  if (code === "pin_incorrect" && Number.isInteger(details.tries_left)) {
    return `密码错误，还可尝试 ${details.tries_left} 次。`;
  }
  return MESSAGES[code] || `操作失败（${code}）。`;
}

export const PURPOSES = {
  login: "卡介质登录",
  application: "确认投保申请",
  seal: "制作电子印章并生成协议",
  agreement: "签署网上协议",
  data_authorisation: "授权提供企业数据",
  receipt: "确认收悉电子保单",
  other: "其他签名",
};

// A name a visitor recognises, next to the exact origin the browser reported.
export function siteName(origin) {
  try {
    const { protocol, hostname } = new URL(origin);
    if (protocol === "https:" && (hostname === "singlewindow.cn" || hostname.endsWith(".singlewindow.cn"))) {
      return "中国国际贸易单一窗口";
    }
    if (["localhost", "127.0.0.1", "[::1]"].includes(hostname)) return "本机网站（练习或培训用）";
  } catch {
    // not a URL: show the origin only
  }
  return "其他网站（请确认您认识它）";
}
