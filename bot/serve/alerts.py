"""Alertmanager and Grafana webhooks (``POST /hooks/...``) as one readable message."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from .bodies import BodyError, Notification, string_field

__all__ = ["MAX_ALERTS_LISTED", "alertmanager_notification"]

#: Alerts listed one by one in a webhook message; the rest are counted.
MAX_ALERTS_LISTED = 20

_FRACTION = re.compile(r"(\.\d{6})\d+")


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00")))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _fmt_when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _alert_lines(alert: dict[str, Any], common: dict[str, str]) -> list[str]:
    labels = _labels(alert.get("labels"))
    ann = _labels(alert.get("annotations"))
    name = labels.get("alertname") or "alert"
    summary = ann.get("summary") or ann.get("title")
    head = f"• {name}" + (f": {summary}" if summary else "")
    lines = [head]
    desc = ann.get("description") or ann.get("message")
    if desc and desc != summary:
        lines.append(f"  {desc}")
    value = alert.get("valueString")
    if isinstance(value, str) and value.strip():
        lines.append(f"  value: {value.strip()}")
    shown = {
        k: v
        for k, v in labels.items()
        if k not in ("alertname", "__alert_rule_uid__") and common.get(k) != v
    }
    if shown:
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())))
    status = str(alert.get("status") or "").lower()
    start, end = _when(alert.get("startsAt")), _when(alert.get("endsAt"))
    if status == "resolved" and end is not None:
        lines.append(f"  resolved {_fmt_when(end)}")
    elif start is not None:
        lines.append(f"  since {_fmt_when(start)}")
    for key in ("panelURL", "dashboardURL", "generatorURL"):
        link = alert.get(key)
        if isinstance(link, str) and link.startswith(("http://", "https://")):
            lines.append(f"  {link}")
            break
    return lines


def alertmanager_notification(data: Any) -> Notification:
    """A readable message from an Alertmanager webhook, a Grafana (unified alerting)
    webhook, or a legacy Grafana alert notification."""
    if not isinstance(data, dict):
        raise BodyError("expected an Alertmanager or Grafana webhook JSON object")
    alerts = data.get("alerts")
    if alerts is None and ("ruleName" in data or "evalMatches" in data):
        return _legacy_grafana(data)
    if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
        raise BodyError('not an Alertmanager/Grafana webhook: "alerts" must be a list of objects')
    firing = [a for a in alerts if str(a.get("status", "firing")).lower() != "resolved"]
    resolved = [a for a in alerts if str(a.get("status", "")).lower() == "resolved"]
    common = _labels(data.get("commonLabels"))
    group = _labels(data.get("groupLabels"))
    status = str(data.get("status") or ("firing" if firing else "resolved")).lower()

    title = data.get("title") if isinstance(data.get("title"), str) else None
    if not title:
        count = len(firing) if status == "firing" else len(resolved)
        name = (
            group.get("alertname")
            or common.get("alertname")
            or (_labels(alerts[0].get("labels")).get("alertname") if alerts else None)
            or "alerts"
        )
        rest = " ".join(v for k, v in sorted(group.items()) if k != "alertname")
        title = f"[{status.upper()}:{count}] {name}" + (f" ({rest})" if rest else "")
    icon = "🔥" if status == "firing" else "✅"
    title = f"{icon} {title}"

    lines: list[str] = []
    ann = _labels(data.get("commonAnnotations"))
    if ann.get("summary") and len(alerts) > 1:
        lines += [ann["summary"], ""]
    listed = 0
    for label, group_alerts in (("Firing", firing), ("Resolved", resolved)):
        if not group_alerts:
            continue
        if firing and resolved:
            lines.append(f"{label}:")
        for alert in group_alerts:
            if listed >= MAX_ALERTS_LISTED:
                break
            lines += _alert_lines(alert, common if len(alerts) > 1 else {})
            listed += 1
        if firing and resolved:
            lines.append("")
    more = len(alerts) - listed
    truncated = data.get("truncatedAlerts")
    if isinstance(truncated, int) and truncated > 0:
        more += truncated
    if more > 0:
        lines.append(f"…and {more} more")
    ext = data.get("externalURL")
    if isinstance(ext, str) and ext.startswith(("http://", "https://")) and len(alerts) > 1:
        lines.append(ext)
    text = "\n".join(lines).strip() or None
    return Notification(text=text, title=title)


def _legacy_grafana(data: dict[str, Any]) -> Notification:
    state = str(data.get("state") or "alerting").lower()
    icon = {"ok": "✅", "alerting": "🔥", "no_data": "❔", "paused": "⏸️"}.get(state, "🔔")
    title = (
        string_field(data.get("title"), "title")
        or string_field(data.get("ruleName"), "ruleName")
        or "alert"
    )
    lines: list[str] = []
    message = string_field(data.get("message"), "message")
    if message:
        lines.append(message)
    for match in data.get("evalMatches") or []:
        if isinstance(match, dict):
            lines.append(f"• {match.get('metric', 'value')} = {match.get('value')}")
    url = data.get("ruleUrl")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        lines.append(url)
    return Notification(text="\n".join(lines) or None, title=f"{icon} {title}")
