// Confirms a PaymentIntent the way a browser holding only the publishable
// key and the intent's client secret can, through Stripe's own Node
// library (its form encoding, its headers), against flair-sandbox --stripe.
// Usage: node stripe_js_confirm.js NODE_MODULES_DIR PORT PUBLISHABLE_KEY
//        INTENT CLIENT_SECRET PAYMENT_METHOD
// Prints {"status": <intent status>} or {"error": {type, code, param, statusCode}}.
"use strict";
const path = require("path");
const Stripe = require(path.join(process.argv[2], "stripe"));
const [port, pk, intent, secret, pm] = process.argv.slice(3);
const stripe = new Stripe(pk, {host: "127.0.0.1", port: parseInt(port, 10), protocol: "http",
                               maxNetworkRetries: 0, apiVersion: "2024-06-20"});

stripe.paymentIntents.confirm(intent, {client_secret: secret, payment_method: pm,
                                       use_stripe_sdk: true})
  .then((pi) => console.log(JSON.stringify({status: pi.status, id: pi.id})))
  .catch((e) => console.log(JSON.stringify({error: {type: e.type, code: e.code, param: e.param,
                                                    statusCode: e.statusCode}})));
