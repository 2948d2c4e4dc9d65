/*
 * tests/browser/checkout.js — one scenario of the demo checkout in
 * headless Chromium (Debian's /usr/bin/chromium, driven by puppeteer-core).
 *
 *   node checkout.js SCENARIO
 *
 * Environment: FLAIR_URL (the gateway), ADMIN_TOKEN (test clock),
 * SHOTS (directory for the screenshots of each step). Prints one JSON line:
 * {"ok":true, ...what the scenario saw} or {"ok":false,"error":...}; the
 * Python side (tests/integration/test_browser_demo.py) checks the ledger
 * and the database against it. Every wait is bounded.
 */
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const puppeteer = require("puppeteer-core");

const BASE = process.env.FLAIR_URL;
const SHOTS = process.env.SHOTS || fs.mkdtempSync(path.join(os.tmpdir(), "flair-shots-"));
const WAIT = 20000;
const CARDS = {
	visa: "4242424242424242",
	declined: "4000000000000002",
	threeds: "4000002500003155",
};

async function shot(page, name) {
	await page.screenshot({ path: path.join(SHOTS, name + ".png") });
}

async function visible(page, sel) {
	await page.waitForSelector(sel, { visible: true, timeout: WAIT });
}

async function text(page, sel) {
	return page.$eval(sel, (e) => e.textContent.trim());
}

async function holdPlaces(page) {
	await page.goto(BASE + "/demo/", { waitUntil: "load", timeout: WAIT });
	await visible(page, "#start");
	await page.waitForFunction(() => document.querySelectorAll("#slot option").length > 0 &&
	                           !document.getElementById("hold").disabled, { timeout: WAIT });
	await shot(page, "1-start");
	await page.click("#hold");
	await visible(page, "#pay");
	await page.waitForFunction(() => /^1[45]:\d\d$/.test(
		document.getElementById("countdown").textContent), { timeout: WAIT });
	return page.evaluate(() => JSON.parse(sessionStorage.getItem("flair-demo")).holdId);
}

async function typeCard(page, number) {
	await page.$eval("#number", (e) => { e.value = ""; });
	await page.type("#number", number);
}

async function reference(page) {
	await visible(page, "#done");
	return text(page, "#reference");
}

async function threeDs(page, button) {
	await typeCard(page, CARDS.threeds);
	await Promise.all([
		page.waitForNavigation({ waitUntil: "load", timeout: WAIT }),
		page.click("#pay-button"),
	]);
	if (!/\/3ds\//.test(page.url()))
		throw new Error("not on the 3-D Secure page: " + page.url());
	await shot(page, button === "#complete" ? "4-3ds-challenge" : "4-3ds-challenge-fail");
	await Promise.all([
		page.waitForNavigation({ waitUntil: "load", timeout: WAIT }),
		page.click(button),
	]);
	if (!page.url().startsWith(BASE + "/demo/"))
		throw new Error("not back on the demo: " + page.url());
}

async function adminClock(offsetMs) {
	const r = await fetch(BASE + "/v1/admin/clock", {
		method: "POST",
		headers: { "Authorization": "Bearer " + process.env.ADMIN_TOKEN,
		           "Content-Type": "application/json" },
		body: JSON.stringify({ offsetMs }),
	});
	if (r.status !== 200)
		throw new Error("admin clock: HTTP " + r.status);
}

const scenarios = {
	async happy(page) {
		const hold = await holdPlaces(page);
		await typeCard(page, CARDS.visa);
		await page.click("#save");
		await shot(page, "2-card");
		await page.click("#pay-button");
		const ref = await reference(page);
		await shot(page, "3-confirmed");
		/* Book again with the saved card. */
		await page.click("#again");
		const hold2 = await holdPlaces(page);
		await visible(page, "#method-0");
		await page.click("#method-0");
		await shot(page, "2-saved-card");
		await page.click("#pay-button");
		const ref2 = await reference(page);
		return { holds: [hold, hold2], references: [ref, ref2] };
	},

	async declined(page) {
		const hold = await holdPlaces(page);
		await typeCard(page, CARDS.declined);
		await page.click("#pay-button");
		await visible(page, "#pay-error");
		const error = await text(page, "#pay-error");
		await shot(page, "5-declined");
		await typeCard(page, CARDS.visa);
		await page.click("#pay-button");
		return { holds: [hold], error, references: [await reference(page)] };
	},

	async threeds_ok(page) {
		const hold = await holdPlaces(page);
		await threeDs(page, "#complete");
		const ref = await reference(page);
		await shot(page, "4-3ds-confirmed");
		return { holds: [hold], references: [ref] };
	},

	async threeds_fail(page) {
		const hold = await holdPlaces(page);
		await threeDs(page, "#fail");
		await visible(page, "#pay-error");
		const error = await text(page, "#pay-error");
		await shot(page, "4-3ds-failed");
		return { holds: [hold], error };
	},

	async expiry(page) {
		const hold = await holdPlaces(page);
		await adminClock(16 * 60 * 1000);
		try {
			await visible(page, "#start");
			await page.waitForFunction(() => /expired/.test(
				document.getElementById("message").textContent), { timeout: WAIT });
			await shot(page, "6-expired");
			return { holds: [hold], message: await text(page, "#message") };
		} finally {
			await adminClock(0);
		}
	},

	async double_click(page) {
		const hold = await holdPlaces(page);
		await typeCard(page, CARDS.visa);
		await page.click("#pay-button", { count: 2, delay: 10 });
		return { holds: [hold], references: [await reference(page)] };
	},
};

async function main() {
	const name = process.argv[2];
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "flair-chromium-"));
	let browser = null;
	try {
		if (!scenarios[name])
			throw new Error("unknown scenario " + name);
		browser = await puppeteer.launch({
			executablePath: "/usr/bin/chromium",
			headless: true,
			userDataDir: dataDir,
			args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
			       "--no-first-run", "--disable-background-networking",
			       "--disable-component-update", "--disable-sync"],
			defaultViewport: { width: 640, height: 760 },
			timeout: WAIT,
		});
		const page = await browser.newPage();
		const errors = [];
		page.on("pageerror", (e) => errors.push(String(e)));
		page.setDefaultTimeout(WAIT);
		const out = await scenarios[name](page);
		out.ok = true;
		out.pageErrors = errors;
		process.stdout.write(JSON.stringify(out) + "\n");
	} catch (e) {
		process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack || e) }) + "\n");
		process.exitCode = 1;
	} finally {
		if (browser)
			await browser.close().catch(() => {});
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
}

main();
