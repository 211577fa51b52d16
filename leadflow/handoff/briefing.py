"""What the salesperson reads: the hand-off's context (score breakdown, recent activity, content viewed) and
the webhook payloads (Slack, CRM)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadflow.handoff.assignment import TIME_FORMAT
from leadflow.leads.views import latest_score, recent_events, template_context, top_reasons
from leadflow.platform.store.models import Handoff, Lead, Message, StageChange


def notification_context(
    session: Session, lead: Lead, handoff: Handoff, lead_url: str, notice: str = ""
) -> dict[str, Any]:
    """What the salesperson needs to open the conversation: who, score and grade with the reasons,
    temperature, what they viewed and downloaded, the last touches, and a link. JSON-ready (webhooks)."""
    snapshot = latest_score(session, lead.id)
    events = recent_events(session, lead.id, limit=50)
    touches = session.scalars(
        select(Message)
        .where(Message.lead_id == lead.id, Message.status == "sent")
        .order_by(Message.id.desc())
        .limit(5)
    ).all()
    promotion = session.get(StageChange, handoff.stage_change_id)
    person = handoff.salesperson
    return {
        **template_context(session, lead),
        "score": {
            "total": lead.score,
            "fit": snapshot.fit if snapshot else 0,
            "behavior": snapshot.behavior if snapshot else 0,
            "account": snapshot.account if snapshot else 0,
            "grade": lead.grade,
            "temperature": lead.temperature,
        },
        "reasons": top_reasons(snapshot.breakdown if snapshot else []),
        "why_now": promotion.reason if promotion else "",
        "viewed": _distinct(e.properties.get("url") for e in events if e.type == "page_viewed")[:10],
        "downloaded": _distinct(
            e.properties.get("title") or e.properties.get("url") or e.type
            for e in events
            if e.type.endswith("_downloaded")
        )[:10],
        "recent_activity": [
            {"type": e.type, "at": e.occurred_at.strftime(TIME_FORMAT), "properties": e.properties}
            for e in events[:10]
        ],
        "last_touches": [
            {
                "channel": m.channel,
                "template": m.template,
                "subject": m.subject or "",
                "at": (m.sent_at or m.created_at).strftime(TIME_FORMAT),
            }
            for m in touches
        ],
        "assignment": {"salesperson": person, "team": handoff.team or "", "rule": handoff.rule},
        "handoff_id": handoff.id,
        "notice": notice,
        "lead_url": lead_url,
    }


def _distinct(values: Any) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if value:
            seen.setdefault(str(value), None)
    return list(seen)


def slack_payload(context: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message (text for notifications, blocks for the channel)."""
    lead, score = context["lead"], context["score"]
    name = " ".join(filter(None, [lead.get("first_name"), lead.get("last_name")])) or lead["email"]
    company = f" at {lead['company']}" if lead.get("company") else ""
    headline = f"{context['notice'] or 'Hot lead'}: {name}{company} (score {score['total']}, grade {score['grade']}, {score['temperature']})"
    reasons = "\n".join(f"• {r['rule']}: {r['points']:+g}" for r in context["reasons"]) or "—"
    viewed = ", ".join(context["viewed"][:5]) or "—"
    downloaded = ", ".join(context["downloaded"][:5]) or "—"
    return {
        "text": f"{headline} <{context['lead_url']}|open the lead>",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{name}* <mailto:{lead['email']}|{lead['email']}>"
                    f"{' · ' + lead['job_title'] if lead.get('job_title') else ''}{company}\n"
                    f"*Why now:* {context['why_now']}\n*Top reasons:*\n{reasons}",
                },
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Viewed:* {viewed}"},
                    {"type": "mrkdwn", "text": f"*Downloaded:* {downloaded}"},
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Assigned to {context['assignment']['salesperson']} by {context['assignment']['rule']}",
                    }
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the lead"},
                        "url": context["lead_url"],
                    }
                ],
            },
        ],
    }


def crm_payload(context: dict[str, Any]) -> dict[str, Any]:
    """A generic JSON document for a CRM: the whole context, under a stable event name."""
    return {"event": "lead.reminder" if context["notice"] else "lead.handed_off", **context}
