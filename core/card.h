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
	CARD_BRAND_UNKNOWN = 0, CARD_BRAND_VISA, CARD_BRAND_MASTERCARD,
	CARD_BRAND_AMEX, CARD_BRAND_DISCOVER, CARD_BRAND_JCB,
	CARD_BRAND_DINERS, CARD_BRAND_UNIONPAY
};

/* True when pan[0..len) is 12..19 digits and passes the Luhn check. */
bool card_luhn_ok(const char *pan, size_t len);
/* Brand from the leading digits (IIN ranges). */
enum card_brand card_brand_of(const char *pan, size_t len);
/* "Visa", "Mastercard", "Amex", "Discover", "JCB", "Diners", "UnionPay",
 * "Unknown". */
const char *card_brand_name(enum card_brand b);
/* Copies the first 6 digits into bin (needs 7) and the last 4 into last4
 * (needs 5). Requires len >= 12. */
void card_bin_last4(const char *pan, size_t len, char bin[7], char last4[5]);
/* True when (month, year) is not before the current month (UTC). */
bool card_expiry_ok(int month, int year, long long now_ms);

#endif
