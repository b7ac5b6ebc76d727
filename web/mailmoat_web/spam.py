"""The spam digest's links under /s/<signed token>: a page with one button, the action on POST.

Mail link scanners (Defender Safe Links, Proofpoint, Mimecast) fetch every link in a message
before the reader does, so GET only shows what the link would do; the release or the
allow-sender happens on the button's POST, with the double-submit CSRF check.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import APIRouter, Form, Request, Response

from mailmoat.spam.digest import LinkClaim, read_link
from mailmoat.spam.quarantine import (
    RELEASED,
    HeldMessage,
    ReleaseResult,
    allow_sender_and_release,
    release,
)
from mailmoat_web.i18n import register_catalog, translator
from mailmoat_web.pages import csrf_ok, forbidden, language, not_found, page

if TYPE_CHECKING:
    from mailmoat.pipeline import Services

log = logging.getLogger("mailmoat.spam.web")

router = APIRouter(prefix="/s")

register_catalog({
    "ja": {
        "spam.title": "迷惑メールとして隔離されたメッセージ",
        "spam.date": "隔離日時",
        "spam.from": "差出人",
        "spam.subject": "件名",
        "spam.score": "スコア",
        "spam.release.note": "このメッセージを受信トレイに届けます。",
        "spam.release.button": "受信する",
        "spam.allow.note": "差出人 {sender} を今後は迷惑メールとして扱わず、"
                           "このメッセージを受信トレイに届けます。",
        "spam.allow.button": "この差出人を許可して受信する",
        "spam.done.released": "メッセージを受信トレイに届けました。",
        "spam.done.already": "このメッセージはすでに受信トレイに届けられています。",
        "spam.done.retry": "いま配送できませんでした。しばらくしてからもう一度お試しください。",
        "spam.done.failed": "配送先のサーバーがこのメッセージを受け付けませんでした。"
                            "管理者にお問い合わせください。",
        "spam.done.in-doubt": "配送が完了したか確認できません。受信トレイを確認し、"
                              "届いていなければ管理者にお問い合わせください。",
        "spam.none": "（なし）",
    },
    "en": {
        "spam.title": "Message held as spam",
        "spam.date": "Held at",
        "spam.from": "From",
        "spam.subject": "Subject",
        "spam.score": "Score",
        "spam.release.note": "This delivers the message to your inbox.",
        "spam.release.button": "Release",
        "spam.allow.note": "Mail from {sender} will no longer be treated as spam, and this "
                           "message is delivered to your inbox.",
        "spam.allow.button": "Allow this sender and release",
        "spam.done.released": "The message has been delivered to your inbox.",
        "spam.done.already": "This message has already been delivered to your inbox.",
        "spam.done.retry": "The message could not be delivered just now. Please try again later.",
        "spam.done.failed": "Your mailbox server refused this message. Please contact your "
                            "administrator.",
        "spam.done.in-doubt": "We cannot tell whether the delivery completed. Check your inbox "
                              "and contact your administrator if the message is not there.",
        "spam.none": "(none)",
    },
})

_OK = frozenset({"released", "already"})


def _services(request: Request) -> Services | None:
    runtime = request.app.state.runtime
    return None if runtime is None else runtime.services  # type: ignore[no-any-return]


def _lookup(request: Request, token: str) -> tuple[Services, LinkClaim, HeldMessage] | None:
    """The services, the link's claim and the held copy it names; None for anything not valid
    now (forged, altered, expired, unknown, past retention): they all get the same 404."""
    services = _services(request)
    if services is None:
        return None
    store = services.spam
    if store is None:
        return None
    # The copy lives for its tenant's retention; the link cannot outlive it. The longest
    # retention bounds the signature's age, the record's own expiry the rest.
    longest = max((t.retention_days for t in services.config.tenants), default=30)
    try:
        claim = read_link(services.settings, token, longest)
    except RuntimeError:
        log.error("spam link key unavailable")
        return None
    if claim is None:
        return None
    held = store.get(claim.message_id, claim.recipient)
    if held is None or held.expires_at <= services.clock.now():
        return None
    return services, claim, held


def _render(request: Request, token: str, services: Services, claim: LinkClaim,
            held: HeldMessage, outcome: str | None) -> Response:
    tenant = services.config.tenant(held.tenant)
    lang = language(request, tenant.language)
    none = translator(lang)("spam.none")
    done = outcome or ("already" if held.state == RELEASED else None)
    return page(request, "spam/action.html", lang, {
        "action": claim.action, "outcome": done, "ok": done in _OK,
        "show_form": done not in _OK, "form_action": f"/s/{token}",
        "held_at": held.held_at.astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "sender": held.from_header or held.mail_from or none,
        "sender_address": held.sender or none, "subject": held.subject or none,
        "score": "-" if held.score is None else f"{held.score:.1f}",
        "switch_url": f"/s/{token}"}, 200)


@router.get("/{token}")
def show(request: Request, token: str) -> Response:
    found = _lookup(request, token)
    if found is None:
        return not_found(request)
    services, claim, held = found
    return _render(request, token, services, claim, held, None)


@router.post("/{token}")
def act(request: Request, token: str, csrf: str = Form("")) -> Response:
    if not csrf_ok(request, csrf):
        return forbidden(request)
    found = _lookup(request, token)
    if found is None:
        return not_found(request)
    services, claim, held = found
    result: ReleaseResult
    if claim.action == "allow":
        result = allow_sender_and_release(services, claim.message_id, claim.recipient)
    else:
        result = release(services, claim.message_id, claim.recipient, by="link")
    if result.status == "unknown":
        return not_found(request)
    fresh = services.spam
    held = (fresh.get(claim.message_id, claim.recipient) if fresh is not None else None) or held
    return _render(request, token, services, claim, held, result.status)
