# ruff: noqa: E501 - translation table: CJK text counts double width
"""Fill locale/zh_Hans/LC_MESSAGES/django.po from the table below (run after `makemessages`; keeps existing msgstrs).

python locale/translate_zh_hans.py && python manage.py compilemessages
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PO = Path(__file__).parent / "zh_Hans" / "LC_MESSAGES" / "django.po"

ZH = {
    "Last 30 days": "最近 30 天",
    "Last 90 days": "最近 90 天",
    "Last year": "最近一年",
    "Everything": "全部",
    "Since a date…": "从某个日期起…",
    "Sync mail from": "同步邮件范围",
    "Start date": "开始日期",
    "Pick the date to start from.": "请选择开始日期。",
    "The start date cannot be in the future.": "开始日期不能晚于今天。",
    "Connected": "已连接",
    "Reconnect required": "需要重新连接",
    "No mailbox": "没有邮箱",
    "Error": "错误",
    "This provider is not available. An administrator must configure it first.": "此服务商不可用，需要管理员先进行配置。",
    "%(provider)s was disabled by an administrator while you were signing in.": "您登录期间，管理员停用了 %(provider)s。",
    "The mailbox was not connected: %(reason)s": "邮箱未能连接：%(reason)s",
    "%(email)s is connected. The first sync has started.": "%(email)s 已连接，首次同步已开始。",
    "%(email)s is reconnected.": "%(email)s 已重新连接。",
    "%(email)s was disconnected and its local copy deleted.": "%(email)s 已断开连接，本地副本已删除。",
    "On %(date)s, %(sender)s wrote:": "%(sender)s 于 %(date)s 写道：",
    "Forwarded message": "转发的邮件",
    "From: %(sender)s": "发件人：%(sender)s",
    "Date: %(date)s": "日期：%(date)s",
    "Subject: %(subject)s": "主题：%(subject)s",
    "To: %(to)s": "收件人：%(to)s",
    "attachment": "附件",
    "“%(address)s” is not a valid email address.": "“%(address)s”不是有效的邮件地址。",
    "From": "发件人",
    "To": "收件人",
    "Cc": "抄送",
    "Bcc": "密送",
    "Subject": "主题",
    "Plain text": "纯文本",
    "Rich text": "富文本",
    "Message": "正文",
    "Attach files": "添加附件",
    "Attachments may total at most 25 MB.": "附件总大小不能超过 25 MB。",
    "Add at least one recipient.": "请至少添加一位收件人。",
    "Mark read": "标为已读",
    "Mark unread": "标为未读",
    "Star": "加星标",
    "Unstar": "取消星标",
    "Archive": "归档",
    "Delete": "删除",
    "Move": "移动",
    "Choose a folder to move to.": "请选择要移动到的文件夹。",
    "Search": "搜索",
    "Account": "账户",
    "Folder": "文件夹",
    "Unread": "未读",
    "Has attachment": "有附件",
    "From date": "起始日期",
    "To date": "截止日期",
    "All accounts": "所有账户",
    "All folders": "所有文件夹",
    "Inbox": "收件箱",
    "Sent": "已发送",
    "Drafts": "草稿",
    "Trash": "已删除",
    "Spam": "垃圾邮件",
    "All mail": "所有邮件",
    "Starred": "已加星标",
    "Important": "重要",
    "Label": "标签",
    "Waiting for first sync": "等待首次同步",
    "First sync": "首次同步",
    "Up to date": "已是最新",
    "Idle": "空闲",
    "Syncing": "同步中",
    "Stopped": "已停止",
    "Draft": "草稿",
    "Queued": "排队中",
    "Sending": "发送中",
    "Failed": "发送失败",
    "New message": "新邮件",
    "Reply": "回复",
    "Reply all": "全部回复",
    "Forward": "转发",
    "(unknown sender)": "（未知发件人）",
    "All inboxes": "所有收件箱",
    "Select at least one conversation and an action.": "请至少选择一个会话和一项操作。",
    "%(count)d message(s) updated.": "已更新 %(count)d 封邮件。",
    "Your message is in the outbox and will be sent shortly.": "邮件已放入发件箱，即将发送。",
    "Draft saved.": "草稿已保存。",
    "Connect a mail account first.": "请先连接一个邮箱账户。",
    "Draft discarded.": "草稿已丢弃。",
    "Sending again.": "正在重新发送。",
    "Checking %(email)s for new mail.": "正在检查 %(email)s 的新邮件。",
    "Client secret": "客户端密钥",
    "A secret is stored. Leave blank to keep it.": "已保存密钥。留空则保持不变。",
    "Not set yet.": "尚未设置。",
    "The Client ID must not contain spaces.": "客户端 ID 不能包含空格。",
    "Required to enable this provider.": "启用此服务商时必填。",
    "Client ID": "客户端 ID",
    "Enabled": "启用",
    "Tenant": "租户",
    "mail provider app": "邮件服务商应用",
    "%(provider)s settings saved.": "%(provider)s 设置已保存。",
    "The settings were not saved: correct the fields marked below.": "设置未保存：请更正下方标出的字段。",
    "Mail accounts": "邮箱账户",
    "Address": "地址",
    "Provider": "服务商",
    "Status": "状态",
    "Reconnect": "重新连接",
    "Disconnect this mailbox and delete its local copy?": "断开此邮箱并删除其本地副本？",
    "Disconnect": "断开连接",
    "No mailbox is connected yet.": "尚未连接任何邮箱。",
    "Connect mailbox": "连接邮箱",
    "Connect a %(name)s mailbox": "连接 %(name)s 邮箱",
    "Mail": "邮件",
    "Mail settings": "邮件设置",
    "Sign out": "退出登录",
    "Folders": "文件夹",
    "Keyboard shortcuts": "键盘快捷键",
    "Next / previous conversation": "下一个 / 上一个会话",
    "Open": "打开",
    "Select": "选择",
    "Compose": "写邮件",
    "Show or hide this help": "显示或隐藏此帮助",
    "(no subject)": "（无主题）",
    "Retry": "重试",
    "Nothing sent yet.": "尚未发送任何邮件。",
    "Outbox": "发件箱",
    "Mailhub lost access to this mailbox.": "Mailhub 已失去对此邮箱的访问权限。",
    "First sync: %(done)s of %(total)s messages": "首次同步：%(done)s / %(total)s 封邮件",
    "Waiting for the first sync…": "等待首次同步…",
    "Synced just now": "刚刚已同步",
    "Synced %(when)s ago": "%(when)s前已同步",
    "Last sync failed:": "上次同步失败：",
    "Sync now": "立即同步",
    "No mail accounts yet.": "还没有邮箱账户。",
    "Connect one": "去连接",
    "Language": "语言",
    "Change": "切换",
    "Has attachments": "有附件",
    "No conversations match.": "没有匹配的会话。",
    "No conversations here.": "这里没有会话。",
    "Cc / Bcc": "抄送 / 密送",
    "Bold": "粗体",
    "Italic": "斜体",
    "Bulleted list": "项目符号列表",
    "Link": "链接",
    "Link address": "链接地址",
    "Remove": "移除",
    "Up to 25 MB in total.": "总大小不超过 25 MB。",
    "Send": "发送",
    "Save draft": "保存草稿",
    "Discard": "丢弃",
    "Draft saved at": "草稿保存于",
    "Search mail": "搜索邮件",
    "Filters": "筛选",
    "Selected conversations": "所选会话",
    "Select all": "全选",
    "Move to folder": "移动到文件夹",
    "Move to…": "移动到…",
    "Older": "更早",
    "(no recipients)": "（无收件人）",
    "No drafts.": "没有草稿。",
    "Back": "返回",
    "Date": "日期",
    "Part of this message could not be read; it is shown as far as possible.": "此邮件的部分内容无法读取，已尽可能显示。",
    "Remote images are hidden to protect your privacy.": "为保护您的隐私，已隐藏远程图片。",
    "Show images": "显示图片",
    "Message body": "邮件正文",
    "Redirect URI": "重定向 URI",
    "Copied": "已复制",
    "Copy": "复制",
    "enabled": "已启用",
    "not in use": "未使用",
    "Save %(name)s settings": "保存 %(name)s 设置",
    "Sign in": "登录",
    "common (any account), organizations (work or school), consumers (personal), or your tenant id": "common（任意账户）、organizations（工作或学校）、consumers（个人）或您的租户 ID",
    "A Microsoft Application (client) ID looks like 00000000-0000-0000-0000-000000000000.": "Microsoft 应用程序（客户端）ID 形如 00000000-0000-0000-0000-000000000000。",
    "Use common, organizations, consumers, a tenant id (GUID) or a domain such as contoso.onmicrosoft.com.": "请使用 common、organizations、consumers、租户 ID（GUID）或域名，例如 contoso.onmicrosoft.com。",
    "You will be sent to your provider to allow Mailhub to read, organise and send your mail, then brought back here.": "您将被带到邮件服务商处，授权 Mailhub 读取、整理和发送您的邮件，然后返回此处。",
    "No mail provider is configured yet. An administrator must enter the Google or Microsoft app credentials under "
    "Settings → Mail settings.": "尚未配置邮件服务商。管理员需要在“设置 → 邮件设置”中填写 Google 或 Microsoft 应用凭据。",
    "Add this exact address as an authorised redirect URI in the Google Cloud console and in the Microsoft Entra app "
    "registration.": "请将此地址原样添加为 Google Cloud 控制台和 Microsoft Entra 应用注册中的已授权重定向 URI。",
}
ZH_PLURAL = {"%(n)s message": "%(n)s 封邮件"}


def _unquote(lines: list[str]) -> str:
    pattern = r'^(?:msgid|msgid_plural|msgstr(?:\[\d\])?)?\s*"(.*)"$'
    return "".join(re.match(pattern, ln).group(1) for ln in lines if ln.strip())


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fill(po: Path) -> tuple[int, list[str]]:
    blocks = po.read_text(encoding="utf-8").split("\n\n")
    filled, missing = 0, []
    out = []
    for block in blocks:
        lines = block.split("\n")
        keys = [i for i, ln in enumerate(lines) if re.match(r"^(msgid|msgid_plural|msgstr)", ln)]
        if not keys:
            out.append(block)
            continue
        parts: dict[str, list[str]] = {}
        current = None
        head = lines[: keys[0]]
        for ln in lines[keys[0] :]:
            m = re.match(r"^(msgid_plural|msgid|msgstr(?:\[\d\])?)\s", ln)
            if m:
                current = m.group(1)
                parts[current] = [ln]
            elif current:
                parts[current].append(ln)
        msgid = _unquote(parts["msgid"]).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        if not msgid:
            out.append(block)
            continue
        if "msgid_plural" in parts:
            if _unquote(parts.get("msgstr[0]", ['msgstr[0] ""'])):
                out.append(block)
                continue
            text = ZH_PLURAL.get(msgid)
            if text is None:
                missing.append(msgid)
                out.append(block)
                continue
            body = parts["msgid"] + parts["msgid_plural"] + [f"msgstr[0] {_quote(text)}"]
        else:
            if _unquote(parts["msgstr"]):
                out.append(block)
                continue
            text = ZH.get(msgid)
            if text is None:
                missing.append(msgid)
                out.append(block)
                continue
            body = parts["msgid"] + [f"msgstr {_quote(text)}"]
        filled += 1
        out.append("\n".join(head + body))
    po.write_text("\n\n".join(out), encoding="utf-8")
    return filled, missing


if __name__ == "__main__":
    count, missing = fill(PO)
    print(f"filled {count}; untranslated {len(missing)}")
    for msgid in missing:
        print("  missing:", msgid)
    sys.exit(0)
