"""Differential test of core/json.c against Python's json module.

Python's json is not RFC 8259 exact, so the reference is json.loads made
strict: parse_constant refuses NaN/Infinity, object_pairs_hook refuses
duplicate keys, and the bytes must decode as strict UTF-8 first. Where this
parser deliberately refuses more than RFC 8259, the reference is told so
(see refused_on_purpose): NUL in a string or key, a lone surrogate escape
(Python gives a lone surrogate str), a number that overflows a double
(Python gives inf), nesting deeper than 64 (Python recurses much deeper).

A seeded generator writes valid documents (random nesting, escapes,
UTF-8, number forms, whitespace) and mutates them at random with the
tokens parsers get wrong. Every text must be accepted by both or refused
by both; when accepted, the values must be equal and a number must be an
integer for fgw_json_int exactly when its token was an integer of at most
2^53-1 in magnitude.
"""

import json
import math
import os
import random
import subprocess
import tempfile

import harness

CASES = 20000
SEED = 8259
MAX_DEPTH = 64
EXACT = 2 ** 53 - 1
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --- the reference ----------------------------------------------------------

class Refused(Exception):
    pass


def _no_constant(name):
    raise Refused(f"constant {name}")


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Refused("duplicate key")
    return dict(pairs)


def refused_on_purpose(value, depth=0):
    """Why core/json.c refuses a value Python accepted, or None."""
    if isinstance(value, (dict, list)):
        if depth + 1 > MAX_DEPTH:
            return "depth"
        items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        for k, v in items:
            why = (refused_on_purpose(k, depth + 1) if k is not None else None) or \
                refused_on_purpose(v, depth + 1)
            if why:
                return why
    elif isinstance(value, str):
        if "\0" in value:
            return "NUL"
        if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            return "lone surrogate"
    elif isinstance(value, float) and math.isinf(value):
        return "overflow"
    return None


def reference(data):
    """(accepted, value, why-differs)."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, Refused, RecursionError):
        return False, None, None
    why = refused_on_purpose(value)
    if why:
        return False, None, why
    return True, value, None


def number_kinds(value, out):
    """One letter per number in document order, as the driver prints them."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        out.append("i" if abs(value) <= EXACT else "f")
    elif isinstance(value, float):
        out.append("f")
    elif isinstance(value, dict):
        for v in value.values():
            number_kinds(v, out)
    elif isinstance(value, list):
        for v in value:
            number_kinds(v, out)


def as_floats(value):
    """Numbers as doubles (cJSON holds doubles); containers recursively."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: as_floats(v) for k, v in value.items()}
    return [as_floats(v) for v in value]


# --- the corpus -------------------------------------------------------------

WS = [" ", "\t", "\n", "\r"]
CHARS = ["a", "Z", " ", "é", "€", "🎉", "\x7f", "\u2028", "\ufeff", "/", "\"", "\\",
         "\n", "\t", "\x01", "\x1f", "\0", "\ud800", "\udfff", "\U0010ffff"]
MUTATIONS = [b"0", b"1", b"-", b"+", b".", b"e", b"E", b"00", b"01", b"-0", b"2.", b".5",
             b"0.e1", b"1e", b"1e400", b"\"", b"\\", b"\\u", b"\\uqqqq", b"\\ud800",
             b"\\udc00", b"\\u0000", b"\\x", b"\\'", b"{", b"}", b"[", b"]", b",", b":",
             b" ", b"\n", b"\t", b"\x00", b"\x0b", b"\x0c", b"\x7f", b"\x80", b"\xc0\xaf",
             b"\xc3\xa9", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xf4\x90\x80\x80",
             b"\xff", b"true", b"fals", b"null", b"NaN", b"Infinity", b"-Infinity",
             b"\"a\":1,", b"//", b"'"]


def ws(rng):
    return "".join(rng.choice(WS) for _ in range(rng.choice([0, 0, 0, 1, 2])))


def gen_number(rng):
    sign = rng.choice(["", "", "-"])
    head = rng.choice(["0", str(rng.randint(1, 9)) + "".join(
        rng.choice("0123456789") for _ in range(rng.choice([0, 1, 3, 8, 15, 16, 17, 25])))])
    frac = rng.choice(["", "", "", "." + "".join(rng.choice("0123456789")
                                                  for _ in range(rng.randint(1, 20)))])
    exp = rng.choice(["", "", "", rng.choice("eE") + rng.choice(["", "+", "-"]) +
                      str(rng.choice([0, 1, 2, 15, 300, 308, 309, 400, 330]))])
    return sign + head + frac + exp


def gen_string(rng):
    out = []
    for _ in range(rng.randint(0, 6)):
        c = rng.choice(CHARS)
        form = rng.randint(0, 2)
        if c in ("\"", "\\") or ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF:
            form = 1 if form == 0 else form  # mostly escape what must be
        if form == 0:
            out.append(c)
        elif form == 1:
            if ord(c) > 0xFFFF:
                v = ord(c) - 0x10000
                out.append("\\u%04x\\u%04X" % (0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF)))
            else:
                out.append(rng.choice(["\\u%04x", "\\u%04X"]) % ord(c))
        else:
            short = {"\"": "\\\"", "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f",
                     "\n": "\\n", "\r": "\\r", "\t": "\\t"}
            out.append(short.get(c, c if ord(c) >= 0x20 and not 0xD800 <= ord(c) <= 0xDFFF
                                 else "\\u%04x" % ord(c)))
    return "\"" + "".join(out) + "\""


def gen_value(rng, depth):
    kind = rng.randint(0, 9 if depth < 5 else 5)
    if kind <= 1:
        return gen_number(rng)
    if kind <= 3:
        return gen_string(rng)
    if kind == 4:
        return rng.choice(["true", "false", "null"])
    if kind == 5 and rng.random() < 0.02:  # now and then, deep nesting
        n = rng.choice([62, 63, 64, 65, 100])
        return "[" * n + "]" * n
    if kind <= 7:
        items = [ws(rng) + gen_value(rng, depth + 1) + ws(rng) for _ in range(rng.randint(0, 4))]
        return "[" + ",".join(items) + ws(rng) + "]"
    keys = [gen_string(rng) for _ in range(rng.randint(0, 4))]
    if keys and rng.random() < 0.1:
        keys.append(rng.choice(keys))  # duplicate
    members = [ws(rng) + k + ws(rng) + ":" + ws(rng) + gen_value(rng, depth + 1) + ws(rng)
               for k in keys]
    return "{" + ",".join(members) + ws(rng) + "}"


def to_bytes(text):
    # lone surrogates written raw cannot be UTF-8: write them as CESU bytes,
    # which both parsers must refuse
    return text.encode("utf-8", "surrogatepass")


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, len(data))
        op = rng.randint(0, 2)
        if op == 0 and data:
            del data[min(at, len(data) - 1)]
        elif op == 1:
            data[at:at] = rng.choice(MUTATIONS)
        elif data:
            at = min(at, len(data) - 1)
            data[at:at + 1] = rng.choice(MUTATIONS)
    return bytes(data)


def corpus(rng, n):
    for i in range(n):
        doc = to_bytes(ws(rng) + gen_value(rng, 0) + ws(rng))
        yield mutate(rng, doc) if i % 2 else doc


# --- the driver -------------------------------------------------------------

def driver(workdir):
    """core/json.c from the build under test, with a tiny stdin driver."""
    exe = os.path.join(workdir, "json_diff_driver")
    lib = os.path.join(harness.BUILD, "libcore.a")
    assert os.path.exists(lib), f"{lib} is missing: make SAN=1 test-build"
    flags = ["-fsanitize=address,undefined"] if "asan" in harness.BUILD else []
    cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "libcjson"], check=True,
                            capture_output=True, text=True).stdout.split()
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-I", ROOT, *flags, "-o", exe,
                    os.path.join(ROOT, "tests", "json", "json_diff_driver.c"), lib, *cflags,
                    "-lm"], check=True, timeout=120)
    return exe


def run_driver(exe, texts):
    feed = b"".join(b"%d\n" % len(t) + t for t in texts)
    out = subprocess.run([exe], input=feed, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(texts) + 1, (len(lines), len(texts))
    return lines[:-1]


def test_differential_against_python_json():
    rng = random.Random(SEED)
    texts = list(corpus(rng, CASES))
    with tempfile.TemporaryDirectory() as work:
        answers = run_driver(driver(work), texts)
    mismatches, accepted, on_purpose = [], 0, {}
    for data, line in zip(texts, answers):
        ok, value, why = reference(data)
        if why:
            on_purpose[why] = on_purpose.get(why, 0) + 1
        if line.startswith("0 "):
            if ok:
                mismatches.append(("refused, python accepts", data, line))
            continue
        accepted += 1
        _, kinds, printed = line.split(" ", 2)
        if not ok:
            mismatches.append(("accepted, python refuses" + (f" ({why})" if why else ""),
                               data, line))
            continue
        want = []
        number_kinds(value, want)
        if kinds != ("".join(want) or "-"):
            mismatches.append((f"number kinds {kinds} != {''.join(want)}", data, line))
        elif as_floats(json.loads(printed)) != as_floats(value):
            mismatches.append(("different value", data, line))
    # the corpus must exercise both sides and the deliberate refusals
    assert accepted > CASES // 5 and CASES - accepted > CASES // 5, accepted
    assert set(on_purpose) >= {"NUL", "lone surrogate", "overflow", "depth"}, on_purpose
    assert not mismatches, "\n".join(f"{w}: {d!r} -> {l[:200]}" for w, d, l in mismatches[:20])
