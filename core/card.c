/*
 * core/card.c — Luhn, IIN brand ranges and the lengths each brand issues,
 * BIN/last-four, expiry, and the search for card numbers in free text
 * (card_find_pan) that both the request checks and the log scrubber use.
 */
#include <string.h>
#include <time.h>

#include "core/card.h"

bool
card_luhn_ok(const char *pan, size_t len)
{
	int sum = 0;
	bool dbl = false;
	if (len < 13 || len > 19)
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
	if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39 || p4 == 3095)
		return CARD_BRAND_DINERS;
	if (p1 == 4)
		return CARD_BRAND_VISA;
	return CARD_BRAND_UNKNOWN;
}

const char *
card_brand_name(enum card_brand b)
{
	switch (b) {
	case CARD_BRAND_VISA:
		return "Visa";
	case CARD_BRAND_MASTERCARD:
		return "Mastercard";
	case CARD_BRAND_AMEX:
		return "Amex";
	case CARD_BRAND_DISCOVER:
		return "Discover";
	case CARD_BRAND_JCB:
		return "JCB";
	case CARD_BRAND_DINERS:
		return "Diners";
	case CARD_BRAND_UNIONPAY:
		return "UnionPay";
	default:
		return "Unknown";
	}
}

bool
card_length_ok(enum card_brand b, size_t len)
{
	switch (b) {
	case CARD_BRAND_VISA:
		return len == 13 || len == 16 || len == 19;
	case CARD_BRAND_MASTERCARD:
		return len == 16;
	case CARD_BRAND_AMEX:
		return len == 15;
	case CARD_BRAND_DINERS:
		return len >= 14 && len <= 19;
	case CARD_BRAND_DISCOVER:
	case CARD_BRAND_JCB:
	case CARD_BRAND_UNIONPAY:
	default:
		return len >= 16 && len <= 19;
	}
}

bool
card_pan_ok(const char *pan, size_t len)
{
	return card_luhn_ok(pan, len) && card_length_ok(card_brand_of(pan, len), len);
}

void
card_bin_last4(const char *pan, size_t len, char bin[7], char last4[5])
{
	size_t nbin = len >= 16 ? 6 : len > 10 ? len - 10 : 0;
	bin[0] = last4[0] = '\0';
	if (len < 10)
		return;
	memcpy(bin, pan, nbin);
	bin[nbin] = '\0';
	memcpy(last4, pan + len - 4, 4);
	last4[4] = '\0';
}

/* ---- card numbers in free text ------------------------------------------ */

#define RUN_MAX_GAP 3 /* separators allowed between two digit groups */

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Length of the separator at s[0..n): ' ', '\t', '-', U+00A0 no-break
 * space, U+2010..U+2015 hyphens and dashes, U+2212 minus; 0 if none. */
static size_t
sep_len(const unsigned char *s, size_t n)
{
	if (n >= 1 && (s[0] == ' ' || s[0] == '\t' || s[0] == '-'))
		return 1;
	if (n >= 2 && s[0] == 0xc2 && s[1] == 0xa0)
		return 2;
	if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 && s[2] >= 0x90 && s[2] <= 0x95)
		return 3;
	if (n >= 3 && s[0] == 0xe2 && s[1] == 0x88 && s[2] == 0x92)
		return 3;
	return 0;
}

/* Past the gap of up to RUN_MAX_GAP separators at text[i] when a digit
 * follows it; i itself otherwise. */
static size_t
skip_gap(const char *text, size_t len, size_t i)
{
	size_t j = i, k;
	for (int seps = 0; seps < RUN_MAX_GAP && j < len; seps++) {
		if ((k = sep_len((const unsigned char *)text + j, len - j)) == 0)
			break;
		j += k;
	}
	return j > i && j < len && is_digit(text[j]) ? j : i;
}

bool
card_digit_run(const char *text, size_t len, size_t i, size_t *start, size_t *end,
               size_t *ndigits)
{
	size_t j, n = 0;
	while (i < len && !is_digit(text[i]))
		i++;
	if (i >= len)
		return false;
	j = i;
	for (;;) {
		while (j < len && is_digit(text[j])) {
			j++;
			n++;
		}
		size_t next = skip_gap(text, len, j);
		if (next == j)
			break;
		j = next;
	}
	*start = i;
	*end = j;
	*ndigits = n;
	return true;
}

/* Luhn over the digits of text[from..to), skipping separators. */
static bool
span_luhn_ok(const char *text, size_t from, size_t to, size_t ndigits)
{
	char d[19];
	size_t n = 0;
	if (ndigits < 13 || ndigits > 19)
		return false;
	for (size_t k = from; k < to && n < sizeof(d); k++)
		if (is_digit(text[k]))
			d[n++] = text[k];
	return n == ndigits && card_luhn_ok(d, n);
}

static bool
is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The end of a UUID (8-4-4-4-12 hex digits) or of a long hex token (20 or
 * more hex digits with a letter among them: a digest, a random id) that
 * starts at text[i]; i when there is none. Their digit groups are not
 * typed card numbers, and without this about 1 in 300 random UUIDs (the
 * usual Idempotency-Key) holds a Luhn-valid span of 13..19 digits. */
static size_t
hexish_end(const char *text, size_t len, size_t i)
{
	static const size_t uuid_groups[5] = { 8, 4, 4, 4, 12 };
	size_t j = i;
	bool letter = false;

	if (i > 0 && is_alnum(text[i - 1]))
		return i;
	for (int g = 0; g < 5; g++) {
		size_t k = 0;
		while (k < uuid_groups[g] && j < len && is_hex(text[j])) {
			j++;
			k++;
		}
		if (k != uuid_groups[g])
			break;
		if (g == 4) {
			if (j >= len || !is_alnum(text[j]))
				return j;
			break;
		}
		if (j >= len || text[j] != '-')
			break;
		j++;
	}
	for (j = i; j < len && is_hex(text[j]); j++)
		letter = letter || !is_digit(text[j]);
	if (j - i >= 20 && letter && (j >= len || !is_alnum(text[j])))
		return j;
	return i;
}

bool
card_find_pan(const char *text, size_t len, size_t *start, size_t *end)
{
	/* Digit groups of one run: where each starts and ends, and digits. */
	size_t gs[64], ge[64], gn[64];
	size_t i = 0, rs, re, rn;

	while (i < len) {
		size_t ng = 0, k, total = 0, h = hexish_end(text, len, i);
		if (h > i) {
			i = h;
			continue;
		}
		if (!is_digit(text[i])) {
			i++;
			continue;
		}
		if (!card_digit_run(text, len, i, &rs, &re, &rn))
			break;
		i = re;
		k = rs;
		if (rn < 13)
			continue;
		/* Split the run into its groups (bounded: a longer run is
		 * looked at 64 groups at a time, overlapping by 18). */
		while (k < re) {
			size_t b = k;
			while (k < re && is_digit(text[k]))
				k++;
			gs[ng] = b;
			ge[ng] = k;
			gn[ng] = k - b;
			ng++;
			k = skip_gap(text, re, k);
			if (ng == 64 && k < re) {
				i = gs[46];
				break;
			}
		}
		for (size_t a = 0; a < ng; a++) {
			total = 0;
			for (size_t b = a; b < ng && total <= 19; b++) {
				total += gn[b];
				if (span_luhn_ok(text, gs[a], ge[b], total)) {
					*start = gs[a];
					*end = ge[b];
					return true;
				}
			}
		}
	}
	return false;
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
