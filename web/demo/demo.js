/*
 * The development demo checkout: pick a slot, hold it (15-minute
 * countdown), pay with a card sealed by flair.js (or a saved card), 3-D
 * Secure and back, confirmation with the reservation reference. Served by
 * flairgw in development mode only (gateway/web.c).
 */
(function () {
	"use strict";

	var flair = window.Flair({ gateway: window.location.origin });
	var state = null;        /* {token, holdId, expiresAt, total, currency, paymentId, secret} */
	var ticker = null, poller = null, paying = false;
	var STORE = "flair-demo";

	function $(id) { return document.getElementById(id); }

	function show(id) {
		["start", "pay", "waiting", "done"].forEach(function (s) { $(s).hidden = s !== id; });
	}

	function message(text) {
		$("message").textContent = text || "";
		$("message").hidden = !text;
	}

	function save() { window.sessionStorage.setItem(STORE, JSON.stringify(state)); }

	function key() {
		var b = new Uint8Array(16);
		window.crypto.getRandomValues(b);
		return Array.prototype.map.call(b, function (x) { return ("0" + x.toString(16)).slice(-2); }).join("");
	}

	function money(minor, currency) { return (minor / 100).toFixed(2) + " " + currency; }

	function stopTimers() {
		if (ticker) window.clearInterval(ticker);
		if (poller) window.clearInterval(poller);
		ticker = poller = null;
	}

	/* Back to the start: the hold is gone. */
	function expired() {
		stopTimers();
		window.sessionStorage.removeItem(STORE);
		state.holdId = null;
		message("Your hold expired and the places were released. Please pick a time again.");
		start();
	}

	function tick() {
		var left = Math.max(0, Math.floor((state.expiresAt - Date.now()) / 1000));
		$("countdown").textContent = Math.floor(left / 60) + ":" + ("0" + left % 60).slice(-2);
		if (left <= 0)
			expired();
	}

	/* The gateway's word wins over the local clock (its test clock moves). */
	function watchHold() {
		flair.paymentStatus(state.holdId).then(function (doc) {
			if (doc.data.reservationStatus === "expired")
				expired();
		}).catch(function () {});
	}

	/* One demo customer per browser tab, so a saved card shows next time. */
	function customer() {
		var c = window.sessionStorage.getItem(STORE + "-customer");
		if (!c) {
			c = "web_" + key().slice(0, 12);
			window.sessionStorage.setItem(STORE + "-customer", c);
		}
		return c;
	}

	function start() {
		show("start");
		flair.request("POST", "/v1/dev/token", { customer: customer() }).then(function (doc) {
			var sel = $("slot");
			state = { token: doc.token };
			flair.setToken(doc.token);
			sel.textContent = "";
			doc.slots.forEach(function (s) {
				var o = document.createElement("option");
				o.value = JSON.stringify({ slot: s.timeSlotId, exp: s.experienceId });
				o.textContent = s.experienceName + " — " + s.startsAt.replace("T", " ").replace(":00Z", " UTC") +
				                " — " + money(s.price, s.currency) + " per guest (" + s.available + " left)";
				sel.appendChild(o);
			});
			$("hold").disabled = doc.slots.length === 0;
		}).catch(function (e) { message("The demo could not start: " + e.message); });
	}

	function payPage() {
		show("pay");
		$("summary").textContent = "Total " + money(state.total, state.currency) + ".";
		$("pay-button").disabled = false;
		tick();
		stopTimers();
		ticker = window.setInterval(tick, 500);
		poller = window.setInterval(watchHold, 2000);
		flair.request("GET", "/v1/payments/methods").then(function (doc) {
			var box = $("saved");
			box.textContent = "";
			(doc.data || []).forEach(function (m, i) {
				var l = document.createElement("label"), r = document.createElement("input");
				l.className = "check";
				r.type = "radio";
				r.name = "method";
				r.value = m.id;
				r.id = "method-" + i;
				l.appendChild(r);
				l.appendChild(document.createTextNode(m.brand + " •••• " + m.last4));
				box.appendChild(l);
			});
			if (box.childNodes.length) {
				var l = document.createElement("label"), r = document.createElement("input");
				l.className = "check";
				r.type = "radio";
				r.name = "method";
				r.value = "";
				r.checked = true;
				l.appendChild(r);
				l.appendChild(document.createTextNode("A new card"));
				box.appendChild(l);
			}
			$("saved-cards").hidden = !box.childNodes.length;
		}).catch(function () {});
	}

	function hold() {
		var choice = JSON.parse($("slot").value);
		$("hold").disabled = true;
		message("");
		flair.request("POST", "/v1/reservations/hold", {
			experienceId: choice.exp, timeSlotId: choice.slot,
			numberOfGuests: parseInt($("guests").value, 10),
			guestName: $("guest-name").value, guestEmail: $("guest-email").value
		}, { "X-Idempotency-Key": key() }).then(function (doc) {
			var r = doc.reservation;
			state.holdId = r.id;
			state.expiresAt = Date.parse(r.holdExpiresAt);
			state.total = r.totalPrice;
			state.currency = "USD";
			save();
			payPage();
		}).catch(function (e) {
			message(e.message);
			$("hold").disabled = false;
		});
	}

	function finished() {
		stopTimers();
		return flair.request("POST", "/v1/reservations/confirm", { reservationId: state.holdId })
			.then(function (doc) {
				window.sessionStorage.removeItem(STORE);
				$("reference").textContent = doc.reservation.reservationReference;
				show("done");
			});
	}

	function payError(text) {
		$("pay-error").textContent = text;
		$("pay-error").hidden = !text;
	}

	function pay() {
		var picked = document.querySelector("input[name=method]:checked");
		var methodId = picked && picked.value ? picked.value : null;
		if (paying)
			return;
		paying = true;
		$("pay-button").disabled = true;
		payError("");
		var begin = state.paymentId ? Promise.resolve() :
			flair.request("POST", "/v1/reservations/hold/convert",
			              { holdId: state.holdId, savePaymentMethod: $("save").checked },
			              { "X-Idempotency-Key": key() }).then(function (doc) {
				state.paymentId = doc.reservation.paymentIntentId;
				state.secret = doc.paymentClientSecret;
				save();
			});
		begin.then(function () {
			var p = { paymentId: state.paymentId, clientSecret: state.secret,
			          returnUrl: window.location.origin + "/demo/?return=1" };
			if (methodId)
				p.paymentMethodId = methodId;
			else
				p.card = { number: $("number").value, expMonth: $("exp-month").value,
				           expYear: $("exp-year").value, cvc: $("cvc").value,
				           holderName: $("holder").value };
			return flair.confirmPayment(p);
		}).then(function (answer) {
			$("number").value = "";
			$("cvc").value = "";
			if (answer.requiresAction) {
				stopTimers();
				save();
				flair.followNextAction(answer);
				return;
			}
			return finished();
		}).catch(function (e) {
			if (e.code === "HOLD_EXPIRED")
				return expired();
			payError(e.code === "PAYMENT_CARD_DECLINED" ? "Your card was declined. Try another card."
			                                           : e.message);
			$("pay-button").disabled = false;
		}).then(function () { paying = false; });
	}

	/* Back from 3-D Secure: the payment-status poll says how it went. */
	function returned() {
		state = JSON.parse(window.sessionStorage.getItem(STORE) || "null");
		window.history.replaceState(null, "", "/demo/");
		if (!state || !state.holdId)
			return start();
		flair.setToken(state.token);
		show("waiting");
		flair.pollPaymentStatus(state.holdId, { intervalMs: 500, timeoutMs: 30000 }).then(function (d) {
			if (d.reservationStatus === "expired")
				return expired();
			if (d.reservationStatus === "confirmed" || d.stripeStatus === "succeeded")
				return finished();
			payPage();
			payError("Authentication failed. Try again or use another card.");
		}).catch(function (e) { payPage(); payError(e.message); });
	}

	document.addEventListener("DOMContentLoaded", function () {
		$("hold").addEventListener("click", hold);
		$("pay-button").addEventListener("click", pay);
		$("again").addEventListener("click", function () { message(""); start(); });
		$("cancel").addEventListener("click", function () {
			stopTimers();
			flair.request("POST", "/v1/reservations/hold/cancel", { holdId: state.holdId })
				.catch(function () {}).then(function () {
					window.sessionStorage.removeItem(STORE);
					message("Your hold was cancelled.");
					start();
				});
		});
		if (/[?&]return=1/.test(window.location.search))
			returned();
		else
			start();
	});
})();
