/*
 * tests/unit/test_notify.c — e-mail rendering (pipeline/notify.c): strict
 * addresses, no control character in any value (header injection),
 * quoted-printable bodies within 76 columns, RFC 2047 subjects split on
 * whole UTF-8 characters, templates refused for unknown placeholders.
 * Runs from the source tree (make test): the shipped etc/mail templates.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/util.h"
#include "pipeline/notify.h"
#include "tt.h"

#define SHIPPED "etc/mail"

static int
init_with(const char *dir, char *err, size_t errlen)
{
	struct notify_opts o = { dir, "shop@example.com", "ops@example.com", NULL, 0 };
	struct fgw_why why;
	int r = notify_init(&o, &why);
	if (r != 0)
		fgw_why_format(&why, err, errlen);
	return r;
}

/* notify_init with its error detail formatted into err. */
static int
init_opts(const struct notify_opts *o, char *err, size_t errlen)
{
	struct fgw_why why;
	int r = notify_init(o, &why);
	if (r != 0)
		fgw_why_format(&why, err, errlen);
	return r;
}

static int
test_addresses(void)
{
	static const char *const good[] = { "john@example.com", "a.b+tag@sub.example.co.uk",
		                                "x_y-z@a-b.example", NULL };
	static const char *const bad[] = { "",
		                               "john",
		                               "@example.com",
		                               "john@",
		                               "john@localhost",
		                               "a..b@example.com",
		                               ".a@example.com",
		                               "a.@example.com",
		                               "a b@example.com",
		                               "a@exa mple.com",
		                               "a@-example.com",
		                               "a@example-.com",
		                               "a@b@example.com",
		                               "\"a\"@example.com",
		                               "a@example.com\r\nBcc: evil@example.com",
		                               "a@example.com\n",
		                               "<a@example.com>",
		                               "a@example..com",
		                               NULL };
	char local[80];
	TT_BEGIN;
	for (int i = 0; good[i]; i++)
		CHECK(notify_addr_ok(good[i]));
	for (int i = 0; bad[i]; i++) {
		if (notify_addr_ok(bad[i]))
			fprintf(stderr, "  accepted: %s\n", bad[i]);
		CHECK(!notify_addr_ok(bad[i]));
	}
	memset(local, 'a', 65);
	snprintf(local + 65, sizeof(local) - 65, "@example.com");
	CHECK(!notify_addr_ok(local)); /* local part over 64 */
	CHECK(notify_addr_ok(local + 1));
end:
	TT_END;
}

/* Every line ends in CRLF and is at most max long. */
static int
lines_ok(const char *msg, size_t max)
{
	const char *p = msg;
	while (*p) {
		const char *nl = strstr(p, "\r\n");
		if (nl == NULL || (size_t)(nl - p) > max ||
		    memchr(p, '\n', (size_t)(nl - p)) != NULL)
			return 0;
		p = nl + 2;
	}
	return 1;
}

static int
test_render_injection_and_layout(void)
{
	char err[256], subject[256], *msg = NULL, longname[400];
	const char *body;
	struct notify_var v[] = { { "name", "Eve\r\nBcc: evil@example.com" },
		                      { "amount", "1.00 EUR" } };
	TT_BEGIN;
	CHECK_EQ_INT(init_with(SHIPPED, err, sizeof(err)), 0);
	/* A line break (or any control character) in a value: refused. */
	CHECK_EQ_INT(notify_render("receipt", "shop@example.com", "john@example.com", v, 2, 0,
	                           &msg, subject, sizeof(subject)),
	             FGW_ERR_INVALID);
	CHECK(msg == NULL);
	v[0].value = "Tab\there";
	CHECK_EQ_INT(notify_render("receipt", "shop@example.com", "john@example.com", v, 2, 0,
	                           &msg, subject, sizeof(subject)),
	             FGW_ERR_INVALID);
	/* A bad recipient or an unknown kind: refused. */
	v[0].value = "John";
	CHECK_EQ_INT(notify_render("receipt", "shop@example.com", "john@example.com\r\nX: y",
	                           v, 2, 0, &msg, subject, sizeof(subject)),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(notify_render("no_such_kind", "shop@example.com", "john@example.com", v,
	                           2, 0, &msg, subject, sizeof(subject)),
	             FGW_ERR_INVALID);
	/* A 300-character value with '=', trailing white space and accents:
	 * quoted-printable keeps every line within 76 characters. */
	memset(longname, 'x', 300);
	memcpy(longname, "a=b é ", 7);
	snprintf(longname + 300, sizeof(longname) - 300, " ");
	v[0].value = longname;
	CHECK_EQ_INT(notify_render("receipt", "shop@example.com", "john@example.com", v, 2,
	                           1704111300000LL, &msg, subject, sizeof(subject)),
	             0);
	CHECK(lines_ok(msg, 78));
	CHECK(strstr(msg, "Date: Mon, 01 Jan 2024 12:15:00 +0000\r\n") != NULL);
	CHECK(strstr(msg, "\r\nTo: <john@example.com>\r\n") != NULL);
	body = strstr(msg, "\r\n\r\n");
	CHECK(body != NULL);
	CHECK(lines_ok(body + 4, 76));
	CHECK(strstr(body, "a=3Db =C3=A9 ") != NULL);
	CHECK(strstr(body, "Hello a=b") == NULL);
end:
	free(msg);
	notify_reset();
	TT_END;
}

/* Decodes every encoded-word of the Subject header; each must hold whole
 * UTF-8 characters, and together the subject given. */
static int
test_subject_encoded_words(void)
{
	char err[256], subject[256], joined[512], *msg = NULL;
	const char *p;
	size_t jl = 0;
	/* 3-byte and 4-byte characters, so a split would fall inside one. */
	struct notify_var v[] = { { "name", "日本語のお客様🎉🎉🎉 Ωμέγα Zoë" },
		                      { "reference", "res_1" } };
	TT_BEGIN;
	CHECK_EQ_INT(init_with(SHIPPED, err, sizeof(err)), 0);
	CHECK_EQ_INT(notify_render("receipt", "shop@example.com", "john@example.com", v, 2, 0,
	                           &msg, subject, sizeof(subject)),
	             0);
	CHECK(lines_ok(msg, 78));
	p = strstr(msg, "\r\nSubject:");
	CHECK(p != NULL);
	p += 10;
	joined[0] = '\0';
	while ((p = strstr(p, "=?UTF-8?B?")) != NULL && p < strstr(msg, "\r\nMIME-Version")) {
		const char *end = strstr(p + 10, "?=");
		unsigned char *raw = NULL;
		size_t rl = 0;
		CHECK(end != NULL);
		CHECK_EQ_INT(fgw_b64_decode(p + 10, (size_t)(end - p - 10), &raw, &rl), 0);
		/* Whole characters: the first byte is no continuation byte and
		 * the last character is complete. */
		CHECK((raw[0] & 0xC0) != 0x80);
		{
			size_t i = rl;
			while (i > 0 && (raw[i - 1] & 0xC0) == 0x80)
				i--;
			CHECK(i > 0);
			unsigned char c = raw[i - 1];
			size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
			CHECK_EQ_INT(rl - (i - 1), need);
		}
		CHECK(jl + rl < sizeof(joined));
		memcpy(joined + jl, raw, rl);
		jl += rl;
		joined[jl] = '\0';
		free(raw);
		p = end + 2;
	}
	CHECK_STR(joined, subject);
	CHECK(strstr(subject, "日本語のお客様🎉🎉🎉 Ωμέγα Zoë") == subject);
end:
	free(msg);
	notify_reset();
	TT_END;
}

/* A copy of the shipped templates with one file's text replaced. */
static int
copy_with(const char *dir, const char *file, const char *text)
{
	DIR *d = opendir(SHIPPED);
	struct dirent *e;
	char src[512], dst[512], *data = NULL;
	size_t len;
	int r = 0;
	if (d == NULL)
		return -1;
	while (r == 0 && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(src, sizeof(src), "%s/%s", SHIPPED, e->d_name);
		snprintf(dst, sizeof(dst), "%s/%s", dir, e->d_name);
		if (strcmp(e->d_name, file) == 0)
			r = fgw_write_file_atomic(dst, text, strlen(text), 0644);
		else if ((r = fgw_read_file(src, 1 << 20, &data, &len)) == 0)
			r = fgw_write_file_atomic(dst, data, len, 0644);
		free(data);
		data = NULL;
	}
	closedir(d);
	return r;
}

static int
test_templates_checked_at_start(void)
{
	char dir[] = "/tmp/fgw-notify-XXXXXX", err[256], path[600];
	struct notify_opts o = { dir, "shop@example.com", "", NULL, 0 };
	TT_BEGIN;
	CHECK(mkdtemp(dir) != NULL);
	CHECK_EQ_INT(copy_with(dir, "refund.html", "<p>{{amount}}</p>\n<p>{{pan}}</p>\n"), 0);
	CHECK_EQ_INT(init_opts(&o, err, sizeof(err)), FGW_ERR_INVALID);
	CHECK(strstr(err, "refund.html:2: unknown placeholder {{pan}}") != NULL);
	CHECK(!notify_enabled());
	CHECK_EQ_INT(copy_with(dir, "refund.html", "<p>{{amount</p>\n"), 0);
	CHECK_EQ_INT(init_opts(&o, err, sizeof(err)), FGW_ERR_INVALID);
	CHECK(strstr(err, "unterminated") != NULL);
	CHECK_EQ_INT(copy_with(dir, "refund.html", "<p>{{amount}}</p>\n"), 0);
	CHECK_EQ_INT(copy_with(dir, "receipt.txt", "no subject line\n\nbody\n"), 0);
	CHECK_EQ_INT(init_opts(&o, err, sizeof(err)), FGW_ERR_INVALID);
	CHECK(strstr(err, "Subject:") != NULL);
	CHECK_EQ_INT(copy_with(dir, "receipt.txt", "Subject: ok {{amount}}\n\nbody\n"), 0);
	CHECK_EQ_INT(init_opts(&o, err, sizeof(err)), 0);
	CHECK(notify_enabled());
	o.from = "not an address";
	CHECK_EQ_INT(init_opts(&o, err, sizeof(err)), FGW_ERR_INVALID);
	CHECK(strstr(err, "mail_from") != NULL);
end:
	notify_reset();
	{
		DIR *d = opendir(dir);
		struct dirent *e;
		while (d != NULL && (e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
		if (d != NULL)
			closedir(d);
		rmdir(dir);
	}
	TT_END;
}

static const struct tt_case cases[] = {
	{ "addresses", test_addresses },
	{ "render_injection_and_layout", test_render_injection_and_layout },
	{ "subject_encoded_words", test_subject_encoded_words },
	{ "templates_checked_at_start", test_templates_checked_at_start },
	{ NULL, NULL },
};

TT_MAIN(cases)
