"""The console's policy form keeps convert-pdf's pdf_into and the tenant's original_from_ips
(issue 16): saved, validated, shown again, and not lost on the next save."""

from __future__ import annotations

from mailmoat.bootstrap import bootstrap
from mailmoat.runtime import Runtime
from tests.unit.admin.helpers import Console

FORM = {"isolation": "risky", "spam_action": "tag", "retention_days": "30", "allowed_senders": "",
        "blocked_senders": "", "original_from_ips": "192.0.2.0/24\n2001:db8::/32",
        "rule-0-order": "1", "rule-0-name": "office to pdf", "rule-0-sender": "",
        "rule-0-min_size": "", "rule-0-max_size": "", "rule-0-countries": "",
        "rule-0-action": "convert-pdf", "rule-0-pdf_into": "portal"}


def test_original_from_ips_and_pdf_into_are_saved_and_shown(signed_in: Console, runtime: Runtime) -> None:
    response = signed_in.post("/admin/t/example.test/policy", **FORM)
    assert response.status_code == 200, response.text
    tenant = runtime.services.config.tenant("example.test")
    assert tenant.original_from_ips == ["192.0.2.0/24", "2001:db8::/32"]
    assert [(r.action, r.pdf_into) for r in tenant.rules] == [("convert-pdf", "portal")]
    shown = signed_in.get("/admin/t/example.test/policy").text
    assert "2001:db8::/32" in shown and '<option value="portal" selected>' in shown
    restarted = bootstrap(runtime.settings).services.config.tenant("example.test")
    assert restarted.original_from_ips == tenant.original_from_ips
    assert restarted.rules[0].pdf_into == "portal"


def test_a_network_that_is_not_a_cidr_is_refused(signed_in: Console, runtime: Runtime) -> None:
    response = signed_in.post("/admin/t/example.test/policy",
                              **{**FORM, "original_from_ips": "192.0.2.0/33"})
    assert response.status_code == 422 and "original_from_ips" in response.text
    assert runtime.services.config.tenant("example.test").original_from_ips == []
