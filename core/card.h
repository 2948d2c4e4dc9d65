/*
 * core/card.h — pure functions over card numbers: Luhn, brand from the BIN,
 * and the display forms that are allowed to leave the sensitive area (BIN
 * and last four). None of them copies the PAN anywhere.
 */
#ifndef FGW_CORE_CARD_H
#define FGW_CORE_CARD_H

#include <stdbool.h>
#include <stddef.h>

enum card_brand {
	CARD_BRAND_UNKNOWN = 0,
	CARD_BRAND_VISA,
	CARD_BRAND_MASTERCARD,
	CARD_BRAND_AMEX,
	CARD_BRAND_DISCOVER,
	CARD_BRAND_JCB,
	CARD_BRAND_DINERS,
	CARD_BRAND_UNIONPAY
};

/* True when pan[0..len) is 13..19 digits and passes the Luhn check. */
bool card_luhn_ok(const char *pan, size_t len);
/* True when the brand issues card numbers of len digits: Visa 13, 16, 19;
 * Mastercard 16; Amex 15; Discover, JCB, UnionPay 16..19; Diners 14..19;
 * an unknown brand 16..19 (so its BIN and last four still hide 6). */
bool card_length_ok(enum card_brand b, size_t len);
/* What a card number must be to be charged: card_luhn_ok and a length its
 * brand (card_brand_of) issues. */
bool card_pan_ok(const char *pan, size_t len);
/* Finds the first card-number-shaped run in text[0..len): 13..19 digits
 * that pass the Luhn check, alone or spread over groups separated by
 * spaces or dashes (ASCII, tab, no-break space, Unicode dashes; up to
 * three between two groups). Any Luhn-valid span of whole groups counts,
 * so "4242 4242 4242 4242 12/30" is found. Digits inside a UUID or a long
 * hex token (a digest) are not looked at. Returns true and the byte span
 * [*start, *end) of the digits and separators, else false. */
bool card_find_pan(const char *text, size_t len, size_t *start, size_t *end);
/* The next digit run at or after text[i]: its span [*start, *end) and its
 * digit count (digits joined by the separators card_find_pan allows).
 * Returns false when there is none. Shared with the log scrubber so both
 * see the same shapes. */
bool card_digit_run(const char *text, size_t len, size_t i, size_t *start, size_t *end,
                    size_t *ndigits);
/* Brand from the leading digits (IIN ranges). */
enum card_brand card_brand_of(const char *pan, size_t len);
/* "Visa", "Mastercard", "Amex", "Discover", "JCB", "Diners", "UnionPay",
 * "Unknown". */
const char *card_brand_name(enum card_brand b);
/* The display fields PCI DSS 3.4.1 allows, leaving at least 6 digits
 * hidden: last4 gets the last 4 digits (needs 5) and bin the first
 * min(6, len - 10) (needs 7), so a 15-digit Amex shows 5, a 13-digit Visa
 * 3. Shorter than 10 digits: both empty. */
void card_bin_last4(const char *pan, size_t len, char bin[7], char last4[5]);
/* True when (month, year) is not before the current month (UTC). */
bool card_expiry_ok(int month, int year, long long now_ms);

#endif
