/*
 * flair.js — the customer's browser side of flairgw.
 *
 * Seals card data to the gateway's published X25519 key (libsodium sealed
 * box, bundled above this file by `make`) and sends it to flairgw only:
 * the card never goes to the website's own servers. Also confirms a
 * payment a convert left waiting, follows the 3-D Secure redirect, and
 * polls payment-status. See docs/flair-js.md.
 *
 *   var flair = Flair({ gateway: "https://pay.example", token: customerJwt });
 *   flair.confirmPayment({ paymentId, clientSecret, card: {...},
 *                          returnUrl: location.href })
 *     .then(function (answer) { if (answer.requiresAction) flair.followNextAction(answer); });
 */
(function (global) {
	"use strict";

	var sodium = global.sodium;

	function FlairError(status, code, message) {
		this.name = "FlairError";
		this.status = status;
		this.code = code;
		this.message = message;
	}
	FlairError.prototype = Object.create(Error.prototype);

	/* An Idempotency-Key per user action: a retry of the same action
	 * reuses it, so the gateway never charges twice for it. */
	function newKey() {
		var b = new Uint8Array(16);
		global.crypto.getRandomValues(b);
		return Array.prototype.map.call(b, function (x) {
			return ("0" + x.toString(16)).slice(-2);
		}).join("");
	}

	function originOf(url) {
		var a = new URL(url, global.location.href);
		if (a.protocol !== "https:" && a.protocol !== "http:")
			throw new FlairError(0, "VALIDATION_ERROR", "the gateway URL must be http(s)");
		return a.origin;
	}

	function Flair(options) {
		if (!(this instanceof Flair))
			return new Flair(options);
		options = options || {};
		/* Every request goes to this one origin: the gateway. */
		this.gateway = originOf(options.gateway || global.location.origin);
		this.token = options.token || null;
		this._key = null;
	}

	Flair.Error = FlairError;

	Flair.prototype.setToken = function (token) {
		this.token = token;
	};

	Flair.prototype.request = function (method, path, body, headers) {
		var h = { "Accept": "application/json" };
		var k;
		if (this.token)
			h.Authorization = "Bearer " + this.token;
		if (body !== undefined)
			h["Content-Type"] = "application/json";
		for (k in headers || {})
			h[k] = headers[k];
		return global.fetch(this.gateway + path, {
			method: method,
			headers: h,
			body: body === undefined ? undefined : JSON.stringify(body),
			credentials: "omit",
			cache: "no-store",
			redirect: "error"
		}).then(function (resp) {
			return resp.text().then(function (text) {
				var doc = null;
				try {
					doc = text ? JSON.parse(text) : null;
				} catch (e) {
					doc = null;
				}
				if (!resp.ok) {
					var retry = resp.headers.get("Retry-After");
					var err = new FlairError(resp.status, doc && doc.error || "HTTP_" + resp.status,
					                         doc && doc.message || "request failed");
					if (retry)
						err.retryAfter = parseInt(retry, 10);
					throw err;
				}
				return doc;
			});
		});
	};

	/* GET /v1/keys/public, once per page. */
	Flair.prototype.publicKey = function () {
		var self = this;
		if (this._key)
			return Promise.resolve(this._key);
		return this.request("GET", "/v1/keys/public").then(function (k) {
			if (!k || typeof k.keyId !== "string" || typeof k.publicKey !== "string")
				throw new FlairError(0, "BAD_KEY", "the gateway's public key is malformed");
			self._key = k;
			return k;
		});
	};

	/* card: {number, expMonth, expYear, cvc, holderName}. Returns the
	 * encryptedCard object {keyId, data}. The plaintext lives only in this
	 * call; the bytes are wiped after sealing. */
	Flair.prototype.sealCard = function (card) {
		return Promise.all([this.publicKey(), sodium.ready]).then(function (r) {
			var key = r[0];
			var doc = {
				number: String(card.number || "").replace(/[\s-]/g, ""),
				expMonth: parseInt(card.expMonth, 10),
				expYear: parseInt(card.expYear, 10),
				cvc: String(card.cvc || ""),
				holderName: String(card.holderName || ""),
				iat: Math.floor(Date.now() / 1000)
			};
			var pk = sodium.from_base64(key.publicKey, sodium.base64_variants.ORIGINAL);
			var msg = sodium.from_string(JSON.stringify(doc));
			var sealed = sodium.crypto_box_seal(msg, pk);
			sodium.memzero(msg);
			doc.number = doc.cvc = "";
			return { keyId: key.keyId,
			         data: sodium.to_base64(sealed, sodium.base64_variants.ORIGINAL) };
		});
	};

	/* Pays a payment a convert left waiting (POST
	 * /v1/payments/{paymentId}/confirm) with a card (sealed here) or a
	 * saved paymentMethodId. Resolves with the answer; rejects with a
	 * FlairError (code PAYMENT_CARD_DECLINED, ...). */
	Flair.prototype.confirmPayment = function (p) {
		var self = this;
		var key = p.idempotencyKey || newKey();
		var source = p.paymentMethodId ? Promise.resolve({ paymentMethodId: p.paymentMethodId })
		                               : this.sealCard(p.card).then(function (enc) {
			return { encryptedCard: enc };
		});
		if (!/^pay_[A-Za-z0-9]+$/.test(p.paymentId || ""))
			return Promise.reject(new FlairError(0, "VALIDATION_ERROR", "paymentId is malformed"));
		return source.then(function (body) {
			body.clientSecret = p.clientSecret;
			if (p.returnUrl)
				body.returnUrl = p.returnUrl;
			return self.request("POST", "/v1/payments/" + p.paymentId + "/confirm", body,
			                    { "Idempotency-Key": key });
		});
	};

	/* Sends the browser to the 3-D Secure page when the answer asks for
	 * it; returns true when it did. Only http(s) URLs are followed. */
	Flair.prototype.followNextAction = function (answer) {
		var na = answer && (answer.nextAction || answer.data && answer.data.nextAction);
		if (!na || na.type !== "redirect_to_url" || typeof na.url !== "string")
			return false;
		var u = new URL(na.url);
		if (u.protocol !== "https:" && u.protocol !== "http:")
			return false;
		global.location.assign(u.href);
		return true;
	};

	Flair.prototype.paymentStatus = function (reservationId) {
		return this.request("GET", "/v1/reservations/" + encodeURIComponent(reservationId) +
		                    "/payment-status");
	};

	/* Polls payment-status until the payment is decided: resolves with
	 * data when the reservation is confirmed, the payment succeeded or it
	 * failed (stripeStatus requires_payment_method); rejects on timeout. */
	Flair.prototype.pollPaymentStatus = function (reservationId, opts) {
		var self = this;
		var every = (opts && opts.intervalMs) || 1000;
		var until = Date.now() + ((opts && opts.timeoutMs) || 60000);
		function once() {
			return self.paymentStatus(reservationId).then(function (doc) {
				var d = doc.data;
				if (d.reservationStatus === "confirmed" || d.reservationStatus === "expired" ||
				    d.reservationStatus === "cancelled" ||
				    d.stripeStatus === "succeeded" || d.stripeStatus === "requires_payment_method")
					return d;
				if (Date.now() > until)
					throw new FlairError(0, "TIMEOUT", "the payment is still being decided");
				return new Promise(function (res) { global.setTimeout(res, every); }).then(once);
			});
		}
		return once();
	};

	global.Flair = Flair;
})(typeof window !== "undefined" ? window : this);
