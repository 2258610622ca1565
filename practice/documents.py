"""The documents each step asks the card to sign: plain UTF-8 text, built from what the
card's certificate says and what the visitor typed. The server keeps the exact text it
handed out and verifies the signature over those bytes."""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from datetime import datetime, timedelta

from practice.state import Visit


@dataclass(frozen=True)
class Step:
    key: str
    purpose: str  # the agent's sign purpose
    title: str
    label: str  # short Chinese label for lists


STEPS: tuple[Step, ...] = (
    Step("login", "login", "单一窗口卡介质登录", "卡介质登录"),
    Step(
        "application",
        "application",
        "中小企业综合保险投保单（小微企业适用）续转申请",
        "确认投保",
    ),
    Step("seal", "seal", "电子印章制作及网上协议生成", "保存印章并生成协议"),
    Step("agreement", "agreement", "小微企业综合保险网上协议", "协议签署"),
    Step("data_authorisation", "data_authorisation", "企业数据授权书", "企业数据授权"),
    Step("submit", "application", "投保申请提交确认", "确定投保"),
    Step("receipt", "receipt", "电子保单收悉确认", "收悉电子保单"),
)
STEP_BY_KEY = {s.key: s for s in STEPS}
SIGNED_STEPS = tuple(s.key for s in STEPS if s.key != "login")


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _header(visit: Visit, step: Step, now: datetime) -> list[str]:
    return [
        f"【{step.title}】",
        "（练习模式：本文件仅用于培训与演示，不产生任何保险或法律效力）",
        f"办理编号：{visit.reference}",
        f"生成时间：{_stamp(now)}",
        f"投保人：{visit.company}",
        f"统一社会信用代码：{visit.uscc or '（未读取）'}",
        f"经办人（证书持有人）：{visit.holder}",
        f"证书编号：{visit.cert_number}",
        "",
    ]


def seal_svg(company: str) -> str:
    """A round red company seal, as the Single Window's seal-making step shows it."""
    name = html.escape(company)
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 200" width="200" height="200">'
        '<circle cx="100" cy="100" r="92" fill="none" stroke="#d0021b" stroke-width="6"/>'
        '<path id="arc" d="M 36 120 A 68 68 0 1 1 164 120" fill="none"/>'
        '<text font-size="17" fill="#d0021b" font-family="Noto Serif CJK SC, serif" '
        'letter-spacing="1">'
        f'<textPath href="#arc" startOffset="50%" text-anchor="middle">{name}</textPath></text>'
        '<polygon fill="#d0021b" points="100,70 108,94 133,94 113,109 120,133 100,118 80,133 '
        '87,109 67,94 92,94"/>'
        '<text x="100" y="165" font-size="15" fill="#d0021b" text-anchor="middle" '
        'font-family="Noto Serif CJK SC, serif">电子印章</text></svg>'
    )


def render(visit: Visit, key: str, now: datetime) -> str:
    step = STEP_BY_KEY[key]
    lines = _header(visit, step, now)
    contact = visit.contact
    if key == "application":
        start = now.date() + timedelta(days=1)
        end = start.replace(year=start.year + 1) - timedelta(days=1)
        lines += [
            "短期出口信用保险 中小企业综合保险 投保单（小微企业适用）",
            "",
            "中国出口信用保险公司：",
            "遵照《短期出口信用保险中小企业综合保险条款》（小微企业适用）的规定，在提供以下信息、"
            "保证和声明的基础上，我公司特向贵公司提出投保短期出口信用保险中小企业综合保险的申请。",
            "",
            "一、投保人基本情况",
            f"公司名称（中文）：{visit.company}",
            f"统一社会信用代码：{visit.uscc or '（未读取）'}",
            "",
            "二、联系人",
            f"姓名：{contact.get('name', '')}",
            f"手机：{contact.get('mobile', '')}",
            f"邮箱：{contact.get('email', '')}",
            "",
            "三、保险期间",
            f"自 {start.isoformat()} 起至 {end.isoformat()} 止（续转）。",
            "",
            "四、投保人声明",
            "本公司已仔细阅读保险条款，尤其是黑体字标注部分的条款内容，对条款和本投保单的要求"
            "完全理解并无异议；所填信息真实、准确、完整。",
        ]
    elif key == "seal":
        svg = seal_svg(visit.company)
        lines += [
            "一、电子印章",
            f"印章名称：{visit.company} 电子印章",
            f"印章图像（SVG）SHA-256：{hashlib.sha256(svg.encode()).hexdigest()}",
            "",
            "二、生成协议",
            "使用上述电子印章生成《小微企业综合保险网上协议》，供下一步签署。",
        ]
    elif key == "agreement":
        lines += [
            "甲方：中国出口信用保险公司",
            f"乙方：{visit.company}",
            "",
            "第一条  乙方通过国际贸易“单一窗口”以电子方式办理小微企业综合保险投保、续转及相关业务，"
            "乙方使用电子口岸卡所作的电子签名与手写签名或盖章具有同等法律效力。",
            "第二条  乙方保证通过“单一窗口”提交的信息真实、准确、完整。",
            "第三条  甲方通过“单一窗口”向乙方发送的电子保单、批单等文件，"
            "自乙方确认收悉之时起视为送达。",
            "第四条  本协议自乙方电子签名之日起生效，有效期至乙方书面解除之日止。",
            "",
            "乙方已确认上述协议条款。",
        ]
    elif key == "data_authorisation":
        lines += [
            f"授权人：{visit.company}",
            "被授权人：中国出口信用保险公司",
            "",
            "授权人同意通过国际贸易“单一窗口”向被授权人提供下列数据内容，用于承保、定价及理赔：",
            "1. 企业基本信息（名称、统一社会信用代码、海关企业编码）；",
            "2. 近三年进出口报关单汇总数据（贸易国别、金额、商品类别）；",
            "3. 出口收汇汇总数据。",
            "",
            "授权期限：自签署之日起一年。授权人同意提供上述数据内容。",
        ]
    elif key == "submit":
        done = ", ".join(STEP_BY_KEY[r.step].label for r in visit.records if r.step in SIGNED_STEPS)
        lines += [
            "投保人确认提交本次小微企业综合保险投保申请。",
            f"已签署文件：{done}",
            "提交后由中国出口信用保险公司审核，审核结果在“单一窗口”信用保险系统中查看。",
        ]
    elif key == "receipt":
        lines += [
            f"保险单号：{visit.policy_number}",
            "保险人：中国出口信用保险公司",
            f"被保险人：{visit.company}",
            "险种：短期出口信用保险 中小企业综合保险（小微企业适用）",
            "",
            "被保险人确认已收悉上述生效电子保单。",
        ]
    else:  # pragma: no cover - callers check the key
        raise KeyError(key)
    return "\n".join(lines) + "\n"
