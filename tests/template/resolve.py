"""template.yaml as CloudFormation would deploy it for some parameter values: Conditions evaluated,
resources and outputs whose condition is false removed, `Fn::If` replaced by its chosen branch
(AWS::NoValue dropped). The tests check the stack that a `sam deploy` with these values gets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
_NO_VALUE = {"Ref": "AWS::NoValue"}
_DROP = object()


def raw_template() -> dict:
    # cfn-lint's loader understands the short intrinsics (!Ref, !GetAtt, !Sub); plain JSON
    # types afterwards so tests can deep-copy and mutate freely.
    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE))))


def _value(node: Any, params: dict[str, Any]) -> Any:
    if isinstance(node, dict) and set(node) == {"Ref"} and node["Ref"] in params:
        return params[node["Ref"]]
    return node


def _condition(node: Any, params: dict[str, Any], conditions: dict[str, Any]) -> bool:
    if isinstance(node, dict):
        (name, args), = node.items()
        if name == "Fn::Equals":
            left, right = (_value(a, params) for a in args)
            return str(left) == str(right)
        if name == "Fn::Not":
            return not _condition(args[0], params, conditions)
        if name == "Fn::And":
            return all(_condition(a, params, conditions) for a in args)
        if name == "Fn::Or":
            return any(_condition(a, params, conditions) for a in args)
        if name == "Condition":
            return _condition(conditions[args], params, conditions)
    raise ValueError(f"unsupported condition {node!r}")


def _resolve(node: Any, truth: dict[str, bool]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            chosen = yes if truth[name] else no
            return _DROP if chosen == _NO_VALUE else _resolve(chosen, truth)
        out = {}
        for key, value in node.items():
            resolved = _resolve(value, truth)
            if resolved is not _DROP:
                out[key] = resolved
        return out
    if isinstance(node, list):
        return [r for r in (_resolve(v, truth) for v in node) if r is not _DROP]
    return node


def deployed_template(**overrides: Any) -> dict:
    """The template for the defaults plus `overrides` (parameters without a default get a
    placeholder: their values do not decide any condition)."""
    template = raw_template()
    params = {name: spec.get("Default", f"<{name}>") for name, spec in template["Parameters"].items()}
    params.update(overrides)
    conditions = template.get("Conditions", {})
    truth = {name: _condition(expr, params, conditions) for name, expr in conditions.items()}
    for section in ("Resources", "Outputs"):
        template[section] = {name: body for name, body in template.get(section, {}).items()
                             if truth.get(body.get("Condition", ""), True)}
    resolved = _resolve(template, truth)
    resolved["Conditions"] = conditions
    resolved["_truth"] = truth
    return resolved
