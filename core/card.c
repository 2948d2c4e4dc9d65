/* core/card.c — Luhn, IIN brand ranges, BIN/last-four, expiry. */
#include <string.h>
#include <time.h>

#include "core/card.h"

bool
card_luhn_ok(const char *pan, size_t len)
{
	int sum = 0;
	bool dbl = false;
	if (len < 12 || len > 19)
		return false;
	for (size_t i = len; i-- > 0;) {
		int d = pan[i] - '0';
		if (d < 0 || d > 9)
			return false;
		if (dbl) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
		dbl = !dbl;
	}
	return sum % 10 == 0;
}

static int
prefix_num(const char *pan, size_t len, size_t n)
{
	int v = 0;
	if (len < n)
		return -1;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (pan[i] - '0');
	return v;
}

enum card_brand
card_brand_of(const char *pan, size_t len)
{
	int p1 = prefix_num(pan, len, 1), p2 = prefix_num(pan, len, 2);
	int p3 = prefix_num(pan, len, 3), p4 = prefix_num(pan, len, 4);
	int p6 = prefix_num(pan, len, 6);

	if (p2 == 34 || p2 == 37)
		return CARD_BRAND_AMEX;
	if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720))
		return CARD_BRAND_MASTERCARD;
	if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649) ||
	    (p6 >= 622126 && p6 <= 622925))
		return CARD_BRAND_DISCOVER;
	if (p2 == 62 || p2 == 81)
		return CARD_BRAND_UNIONPAY;
	if (p4 >= 3528 && p4 <= 3589)
		return CARD_BRAND_JCB;
	if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39 ||
	    p4 == 3095)
		return CARD_BRAND_DINERS;
	if (p1 == 4)
		return CARD_BRAND_VISA;
	return CARD_BRAND_UNKNOWN;
}

const char *
card_brand_name(enum card_brand b)
{
	switch (b) {
	case CARD_BRAND_VISA: return "Visa";
	case CARD_BRAND_MASTERCARD: return "Mastercard";
	case CARD_BRAND_AMEX: return "Amex";
	case CARD_BRAND_DISCOVER: return "Discover";
	case CARD_BRAND_JCB: return "JCB";
	case CARD_BRAND_DINERS: return "Diners";
	case CARD_BRAND_UNIONPAY: return "UnionPay";
	default: return "Unknown";
	}
}

void
card_bin_last4(const char *pan, size_t len, char bin[7], char last4[5])
{
	memcpy(bin, pan, 6);
	bin[6] = '\0';
	memcpy(last4, pan + len - 4, 4);
	last4[4] = '\0';
}

bool
card_expiry_ok(int month, int year, long long now_ms)
{
	struct tm tm;
	time_t secs = (time_t)(now_ms / 1000);
	if (month < 1 || month > 12 || year < 2000 || year > 2100)
		return false;
	gmtime_r(&secs, &tm);
	int cy = tm.tm_year + 1900, cm = tm.tm_mon + 1;
	return year > cy || (year == cy && month >= cm);
}
