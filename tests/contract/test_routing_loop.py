"""A message we delivered that comes back to us (an ses-mode tenant without routing_domain is sent
to its own MX) is held as ROUTING_LOOP, never delivered again; in both runtimes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mailmoat.loop import MAX_PASSES, TRACE_HEADER
from tests.contract.harness import Gateway, World, incoming
from tests.contract.test_contract import ALICE, ALPHA, world

MakeGateway = Callable[[World], Gateway]


def findings(gw: Gateway, message_id: str) -> set[str]:
    row = gw.record(message_id)
    assert row.report is not None
    return {f["symbol"] for f in row.report["findings"]}


def test_a_message_we_delivered_fed_back_in_is_held_as_a_routing_loop(gateway: MakeGateway) -> None:
    gw = gateway(world(ALPHA))
    first = gw.receive(incoming([ALICE]), [ALICE])
    gw.run()
    assert gw.record(first).state == "delivered"
    assert "ROUTING_LOOP" not in findings(gw, first)  # a fresh message is not affected
    [copy] = gw.outbox.sent
    assert TRACE_HEADER.encode() in copy.data

    again = gw.receive(copy.data, [ALICE])  # the mailbox route led back to our MX
    gw.run()

    row = gw.record(again)
    assert (row.state, row.disposition) == ("held", "held")
    assert row.error is not None and "ROUTING_LOOP" in row.error
    assert "ROUTING_LOOP" in findings(gw, again)
    assert gw.deliveries() == [(first, ALICE)]  # never delivered a second time
    assert gw.dsns() == []


def test_another_installs_trace_header_does_not_count(gateway: MakeGateway) -> None:
    gw = gateway(world(ALPHA))
    raw = f"{TRACE_HEADER}: gateway.other.example; id=x1\r\n".encode() + incoming([ALICE])
    message_id = gw.receive(raw, [ALICE])
    gw.run()
    assert gw.record(message_id).state == "delivered"
    assert "ROUTING_LOOP" not in findings(gw, message_id)


@pytest.mark.parametrize(("passes", "state"), [(MAX_PASSES, "delivered"),
                                               (MAX_PASSES + 1, "held")])
def test_more_passes_than_allowed_by_our_received_lines_is_a_loop(
        gateway: MakeGateway, passes: int, state: str) -> None:
    # The trace header lost on the way (a mailbox host that strips X- headers): our own
    # Received lines still count the passes. The local ingress adds one itself.
    gw = gateway(world(ALPHA))
    hostname = gw.runtime.settings.smtp_hostname
    ours = gw.runtime.settings.runtime == "local"
    lines = b"".join(
        f"Received: from mx.alpha.example (mx.alpha.example [81.2.69.161])\r\n\tby {hostname} "
        f"(mailmoat) with ESMTP id loop{n}; Fri, 27 Nov 2026 19:0{n}:00 +0900\r\n".encode()
        for n in range(passes - (1 if ours else 0)))
    message_id = gw.receive(lines + incoming([ALICE]), [ALICE])
    gw.run()
    assert gw.record(message_id).state == state
    assert ("ROUTING_LOOP" in findings(gw, message_id)) == (state == "held")
