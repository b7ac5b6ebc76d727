"""The tenant policy page: isolation, sender lists, spam action, retention and attachment rules,
shown as a form and saved as a whole (one save at a time)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from mailmoat.admin.accounts import ALL_TENANTS
from mailmoat.admin.policy import POLICY_FIELDS, PolicyError, policy_of, replace_tenant, with_policy
from mailmoat_web.admin.access import TenantScope, posted_scope
from mailmoat_web.admin.render import render

router = APIRouter()

RULE_ACTIONS = ("isolate", "delete", "convert-pdf", "remove-macros", "html-to-text", "keep")
RULE_ROWS_EXTRA = 1  # empty rows offered for a new rule


@router.get("/t/{tenant}/policy", response_class=HTMLResponse)
def policy(request: Request, tenant: str, s: TenantScope) -> Response:
    return render(request, s.admin, s.cfg, "admin/policy.html", _policy_view(policy_of(s.cfg)))


@router.post("/t/{tenant}/policy")
async def policy_save(request: Request, tenant: str) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    s = posted_scope(request, tenant, fields.get("csrf", ""))
    c, admin, cfg = s.c, s.admin, s.cfg
    wanted = _policy_from_form(fields)
    try:
        with c.policy_lock:
            current = c.runtime.services.config.tenant(tenant)
            updated = with_policy(current, wanted)
            c.policy.save(updated, admin.email)
            # Stages read services.config per message: the next one gets the new policy.
            c.runtime.services.config = replace_tenant(c.runtime.services.config, updated)
    except PolicyError as exc:
        view = _policy_view(wanted)
        view["problems"] = exc.problems
        return render(request, admin, cfg, "admin/policy.html", view, 422)
    before, after = policy_of(cfg), policy_of(updated)
    changed = [k for k in POLICY_FIELDS if before.get(k) != after.get(k)]
    c.record(request, admin, tenant, "policy.update", "", ", ".join(changed) or "no change")
    view = _policy_view(after)
    view["saved"] = True
    return render(request, admin, updated, "admin/policy.html", view)


def _lines(text: str) -> list[str]:
    """A textarea or list → entries: one per line, or separated by commas, semicolons or spaces
    (addresses, domains and country codes contain none of these)."""
    return text.replace(",", " ").replace(";", " ").split()[:2000]


def _policy_from_form(fields: dict[str, str]) -> dict[str, Any]:
    wanted: dict[str, Any] = {
        "isolation": fields.get("isolation", ""),
        "zip_is_archive_type": fields.get("zip_is_archive_type") == "1",
        "defang_all_links": fields.get("defang_all_links") == "1",
        "html_to_text": fields.get("html_to_text") == "1",
        "spam_action": fields.get("spam_action", ""),
        "retention_days": fields.get("retention_days", ""),
        "allowed_senders": _lines(fields.get("allowed_senders", "")),
        "blocked_senders": _lines(fields.get("blocked_senders", "")),
        "original_from_ips": _lines(fields.get("original_from_ips", "")),
    }
    rules: list[tuple[float, int, dict[str, Any]]] = []
    for i in range(200):
        prefix = f"rule-{i}-"
        if f"{prefix}name" not in fields:
            break
        if fields.get(f"{prefix}remove") == "1":
            continue
        rule: dict[str, Any] = {
            "name": fields.get(f"{prefix}name", "").strip()[:200],
            "sender": _lines(fields.get(f"{prefix}sender", "")),
            "countries": [c.upper() for c in _lines(fields.get(f"{prefix}countries", ""))],
            "min_size": fields.get(f"{prefix}min_size", "").strip() or None,
            "max_size": fields.get(f"{prefix}max_size", "").strip() or None,
            "action": fields.get(f"{prefix}action", ""),
            "pdf_into": fields.get(f"{prefix}pdf_into", "") or "message",
        }
        if not rule["name"] and not rule["sender"] and not rule["countries"] \
                and rule["min_size"] is None and rule["max_size"] is None:
            continue  # the empty row offered for a new rule
        try:
            order = float(fields.get(f"{prefix}order", "") or i + 1)
        except ValueError:
            order = float(i + 1)
        rules.append((order, i, rule))
    wanted["rules"] = [rule for _order, _i, rule in sorted(rules, key=lambda x: (x[0], x[1]))]
    return wanted


def _policy_view(policy: dict[str, Any]) -> dict[str, Any]:
    """Form values from a policy dict (also an invalid one, shown back with its problems)."""
    rules = [dict(r) for r in policy.get("rules", []) if isinstance(r, dict)]
    for rule in rules:
        rule["sender_text"] = "\n".join(str(s) for s in rule.get("sender", []))
        rule["countries_text"] = " ".join(str(s) for s in rule.get("countries", []))
    rules += [{"name": "", "sender_text": "", "countries_text": "", "min_size": None, "max_size": None,
               "action": "isolate"} for _ in range(RULE_ROWS_EXTRA)]
    return {"p": policy, "rules": rules, "rule_actions": RULE_ACTIONS, "problems": [], "saved": False,
            "allowed_text": "\n".join(str(s) for s in policy.get("allowed_senders", [])),
            "blocked_text": "\n".join(str(s) for s in policy.get("blocked_senders", [])),
            "original_ips_text": "\n".join(str(s) for s in policy.get("original_from_ips", [])),
            "all_tenants": ALL_TENANTS}
