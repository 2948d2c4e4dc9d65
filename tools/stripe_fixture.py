#!/usr/bin/env python3
"""Extracts tests/fixtures/stripe-openapi-subset.json from Stripe's OpenAPI
description (openapi/spec3.json or spec3.yaml of the public stripe/openapi
repository; YAML needs PyYAML).

    python3 tools/stripe_fixture.py SPEC3 COMMIT [OUT]

Only the operations and parameters the stripe adapter sends are kept, as
data: for each operation its method and path, its path parameters, and
each form (or query) parameter flattened to the key the adapter sends
("card[number]", "payment_method_types[]" for an array item,
"metadata[*]" for a free-form key), with the alternatives Stripe allows
for its value (type, enum, maxLength). Required parameters come as
groups: "when" "" is always, "when" "card" applies once any card[...]
is sent. A parameter listed here that the spec does not define stops
the script: the adapter must not send it.

The contract test (tests/unit/test_stripe.c) and flair-sandbox --stripe
(tools/sandbox/stripe_contract.c) both read the fixture and refuse the
same things: an unknown key, a value of the wrong type, a value not in
the enum, a missing required parameter."""

import json
import sys

# operation name, method, path, the keys the adapter sends.
OPERATIONS = [
    ("payment_method_create", "post", "/v1/payment_methods",
     ["type", "card[number]", "card[exp_month]", "card[exp_year]", "card[cvc]",
      "billing_details[name]", "metadata[*]"]),
    # A Stripe.js PaymentMethod saved for later: the Customer that owns it
    # and the attachment, so a later PaymentIntent names both.
    ("customer_create", "post", "/v1/customers", ["metadata[*]"]),
    ("payment_method_attach", "post", "/v1/payment_methods/{payment_method}/attach",
     ["customer"]),
    # Deleting a saved Stripe card detaches it from its Customer.
    ("payment_method_detach", "post", "/v1/payment_methods/{payment_method}/detach", []),
    ("payment_intent_create", "post", "/v1/payment_intents",
     ["amount", "currency", "confirm", "capture_method", "payment_method", "customer",
      "payment_method_types[]", "metadata[*]", "description", "receipt_email",
      "return_url", "payment_method_options[card][request_three_d_secure]",
      # Not sent: kept so that the reason raw card fields cannot ride on
      # a PaymentIntent stays visible (its enum has no "card").
      "payment_method_data[type]"]),
    # What Stripe.js sends when the customer's browser confirms a
    # PaymentIntent flairgw made unconfirmed (confirmWith stripe_js), with
    # the publishable key and the intent's client secret; the sandbox
    # checks it like any request (the publishable key is its credential,
    # not a parameter).
    ("payment_intent_confirm", "post", "/v1/payment_intents/{intent}/confirm",
     ["client_secret", "payment_method", "return_url", "use_stripe_sdk"]),
    ("payment_intent_retrieve", "get", "/v1/payment_intents/{intent}", []),
    # Not sent by the adapter: the tests change an intent's amount at
    # Stripe with it (someone holding the secret key), which flairgw must
    # notice.
    ("payment_intent_update", "post", "/v1/payment_intents/{intent}", ["amount", "currency"]),
    ("payment_intent_search", "get", "/v1/payment_intents/search", ["query"]),
    ("payment_intent_capture", "post", "/v1/payment_intents/{intent}/capture", []),
    ("payment_intent_cancel", "post", "/v1/payment_intents/{intent}/cancel", []),
    ("refund_create", "post", "/v1/refunds", ["payment_intent", "amount"]),
]


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        node = spec["components"]["schemas"][name]
    return node


def split_key(key):
    head, _, rest = key.partition("[")
    segs = [head]
    while rest:
        seg, _, rest = rest.partition("]")
        segs.append(seg)
        rest = rest[1:] if rest.startswith("[") else rest
    return segs


def alternatives(spec, node):
    node = resolve(spec, node)
    alts = node["anyOf"] if "anyOf" in node else [node]
    out = []
    for a in alts:
        a = resolve(spec, a)
        t = a.get("type")
        if t not in ("string", "integer", "boolean"):
            continue
        alt = {"type": t}
        if "enum" in a:
            alt["enum"] = list(a["enum"])
        if "maxLength" in a:
            alt["maxLength"] = a["maxLength"]
        out.append(alt)
    if not out:
        raise SystemExit(f"no scalar alternative in {json.dumps(node)[:200]}")
    return out


def child(spec, node, seg):
    """The schema of node's member seg ("" for an array item, "*" for a
    free-form key), choosing the anyOf branch that has it."""
    node = resolve(spec, node)
    for branch in node.get("anyOf", [node]):
        branch = resolve(spec, branch)
        if seg == "" and branch.get("type") == "array":
            return branch, branch["items"]
        if seg == "*" and isinstance(branch.get("additionalProperties"), dict):
            return branch, branch["additionalProperties"]
        if seg in branch.get("properties", {}):
            return branch, branch["properties"][seg]
    return None, None


def operation(spec, name, method, path, keys):
    op = spec["paths"][path][method]
    out = {"name": name, "method": method.upper(), "path": path,
           "in": "form" if method == "post" else "query",
           "path_params": {}, "params": {}, "required": [], "defined": []}
    top = {"type": "object", "properties": {}, "required": []}
    for prm in op.get("parameters", []):
        if prm["in"] == "path":
            out["path_params"][prm["name"]] = alternatives(spec, prm["schema"])
        elif prm["in"] == "query":
            top["properties"][prm["name"]] = prm["schema"]
            if prm.get("required"):
                top["required"].append(prm["name"])
    body = op.get("requestBody", {}).get("content", {}).get(
        "application/x-www-form-urlencoded", {}).get("schema")
    if body is not None:
        body = resolve(spec, body)
        top["properties"].update(body.get("properties", {}))
        top["required"] += body.get("required", [])
    out["defined"] = sorted(top["properties"])
    groups = {"": sorted(top["required"])}
    for key in keys:
        segs = split_key(key)
        node, prefix = top, ""
        for i, seg in enumerate(segs):
            parent, node = child(spec, node, seg)
            if node is None:
                raise SystemExit(f"{method.upper()} {path}: Stripe defines no {key}")
            if i > 0 and parent.get("required"):
                groups.setdefault(prefix, [])
                groups[prefix] = sorted(set(groups[prefix]) |
                                        {f"{prefix}[{r}]" for r in parent["required"]})
            prefix = seg if i == 0 else f"{prefix}[{seg}]"
        out["params"][key] = alternatives(spec, node)
    for when, req in sorted(groups.items()):
        if req:
            out["required"].append({"when": when, "all": req})
    for g in out["required"]:
        for r in g["all"]:
            if r not in out["params"]:
                # A required parameter we do not send: the fixture still
                # knows its type, so that a request missing it fails as
                # "missing", not as "unknown".
                segs = split_key(r)
                node = top
                for seg in segs:
                    node = child(spec, node, seg)[1]
                out["params"][r] = alternatives(spec, node)
    return out


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    spec_path, commit = sys.argv[1], sys.argv[2]
    out_path = sys.argv[3] if len(sys.argv) > 3 else "tests/fixtures/stripe-openapi-subset.json"
    with open(spec_path, encoding="utf-8") as f:
        if spec_path.endswith((".yaml", ".yml")):
            import yaml  # only to regenerate from the YAML edition
            spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        else:
            spec = json.load(f)
    fixture = {
        "comment": "Generated by tools/stripe_fixture.py from Stripe's OpenAPI "
                   "description; only what the stripe adapter sends. Regenerate, "
                   "do not edit.",
        "source": {"repository": "stripe/openapi",
                   "path": "openapi/" + spec_path.rsplit("/", 1)[-1],
                   "commit": commit, "api_version": spec["info"]["version"]},
        "operations": [operation(spec, *o) for o in OPERATIONS],
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(fixture, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
