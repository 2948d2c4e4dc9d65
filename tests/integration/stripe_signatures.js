// Builds a table of Stripe-Signature headers, well-formed and malformed,
// with Stripe's own Node library (generateTestHeaderString signs, and
// constructEvent gives Stripe's verdict), for test_stripe_signatures.py.
// Usage: node stripe_signatures.js NODE_MODULES_DIR NOW_SECONDS
// Prints a JSON array of {name, header, payload, secret, verify_secret,
// verify_payload, now, tolerance, stripe} where stripe is "accept" or
// "refuse".
"use strict";
const crypto = require("crypto");
const path = require("path");
const Stripe = require(path.join(process.argv[2], "stripe"));
const stripe = new Stripe("sk_test_unused");
const now = parseInt(process.argv[3], 10);
const tol = 300;
const secret = "whsec_parity_" + now;
const payload = JSON.stringify({id: "evt_parity", object: "event", type: "test.parity",
                                data: {object: {}}});

function header(t, opts = {}) {
  return stripe.webhooks.generateTestHeaderString({
    payload: opts.payload || payload, secret: opts.secret || secret, timestamp: t,
  });
}
function v1(t, opts) {
  return header(t, opts).split(",v1=")[1];
}
// For timestamps the helper would not write as given (it floors numbers
// and replaces anything else by the current time): signs "<t>.<payload>"
// exactly as written.
function raw(t) {
  return `t=${t},v1=` + crypto.createHmac("sha256", secret).update(`${t}.${payload}`, "utf8")
    .digest("hex");
}
const good = v1(now);
const upper = good.toUpperCase();
const other = v1(now, {secret: "whsec_other"});

const cases = [
  ["valid", header(now)],
  ["valid_older_within_tolerance", header(now - 299)],
  ["valid_at_tolerance_edge", header(now - 300)],
  ["old_timestamp", header(now - 301)],
  ["very_old_timestamp", header(now - 86400)],
  ["future_within_tolerance", header(now + 100)],
  ["future_beyond_tolerance", header(now + 301)],
  ["wrong_secret", header(now, {secret: "whsec_other"})],
  ["other_payload", header(now, {payload: payload + " "})],
  ["bad_v1_then_good", `t=${now},v1=${other},v1=${good}`],
  ["good_then_bad_v1", `t=${now},v1=${good},v1=${other}`],
  ["not_hex_v1_beside_good", `t=${now},v1=zz${good.slice(2)},v1=${good}`],
  ["short_v1_beside_good", `t=${now},v1=abc,v1=${good}`],
  ["empty_v1_beside_good", `t=${now},v1=,v1=${good}`],
  ["long_v1_beside_good", `t=${now},v1=${good}00,v1=${good}`],
  ["uppercase_hex_only", `t=${now},v1=${upper}`],
  ["uppercase_beside_lowercase", `t=${now},v1=${upper},v1=${good}`],
  ["unknown_items_ignored", `t=${now},v0=${good},scheme9=zz,v1=${good}`],
  ["item_without_equals", `t=${now},garbage,v1=${good}`],
  ["empty_items", `t=${now},,v1=${good},`],
  ["leading_comma", `,t=${now},v1=${good}`],
  ["v1_first_t_last", `v1=${good},t=${now}`],
  ["space_before_v1_key", `t=${now}, v1=${good}`],
  ["space_before_t_key", `v1=${good}, t=${now}`],
  ["tab_before_v1_key", `t=${now},\tv1=${good}`],
  ["uppercase_keys", `T=${now},V1=${good}`],
  ["no_t", `v1=${good}`],
  ["no_v1", `t=${now}`],
  ["only_v0", `t=${now},v0=${good}`],
  ["empty_t", `t=,v1=${good}`],
  ["t_not_a_number_signed_as_is", raw("abc")],
  ["t_nan_signed_as_nan", raw("NaN").replace("t=NaN", "t=abc")],
  ["t_leading_zero_signed_as_sent", raw("0" + now)],
  ["t_leading_zero_signed_canonical", `t=0${now},v1=${good}`],
  ["t_plus_sign", `t=+${now},v1=${good}`],
  ["t_plus_sign_signed_as_sent", raw("+" + now)],
  ["t_trailing_space", `t=${now} ,v1=${good}`],
  ["t_trailing_junk", `t=${now}x,v1=${good}`],
  ["t_negative", raw(-1)],
  ["t_negative_within_tolerance_of_zero", raw(-5)],
  ["duplicate_t_same", `t=${now},t=${now},v1=${good}`],
  ["duplicate_t_old_then_now", `t=${now - 1000},t=${now},v1=${good}`],
  ["duplicate_t_now_then_old", `t=${now},t=${now - 1000},v1=${good}`],
  ["v1_with_extra_equals", `t=${now},v1=${good}=`],
  ["v1_with_trailing_junk_after_equals", `t=${now},v1=${good}=junk`],
  ["many_bad_v1_then_good", `t=${now}` + `,v1=${other}`.repeat(20) + `,v1=${good}`],
  ["header_over_4096_bytes", `t=${now},v1=${good}` + ",x=y".repeat(1100)],
  ["empty_header", ""],
  ["only_commas", ",,,"],
];

const out = [];
for (const [name, hdr] of cases) {
  let verdict = "accept";
  try {
    stripe.webhooks.constructEvent(payload, hdr, secret, tol, undefined, now * 1000);
  } catch (e) {
    verdict = "refuse";
  }
  out.push({name, header: hdr, payload, secret, now, tolerance: tol, stripe: verdict});
}
process.stdout.write(JSON.stringify(out));
