"""tools/bench/depth.py DB NAME... — the B-tree depth of SQLite tables and
indexes, read from the file itself: from each one's root page down its
right-most child pointers to a leaf (a B-tree is balanced, so every leaf
is that deep; the right edge is where time-ordered keys are appended).
Prints "NAME LEVELS" per name; read-only, a few pages
per name, safe beside a running gateway (WAL: the newest pages may sit in
the -wal file, so a live depth can be one level short for a moment).
"""

import sqlite3
import struct
import sys


def depth(f, page_size, root):
    levels, page = 0, root
    while True:
        levels += 1
        f.seek((page - 1) * page_size)
        buf = f.read(page_size)
        off = 100 if page == 1 else 0
        kind = buf[off]
        if kind in (0x0A, 0x0D):  # index leaf, table leaf
            return levels
        if kind not in (0x02, 0x05):  # index interior, table interior
            raise SystemExit("depth.py: page %d of unknown kind %#x" % (page, kind))
        page = struct.unpack(">I", buf[off + 8:off + 12])[0]


def main():
    path, names = sys.argv[1], sys.argv[2:]
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    roots = dict(con.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0"))
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(path, "rb") as f:
        for n in names:
            if n in roots:
                print("%s %d" % (n, depth(f, page_size, roots[n])))


if __name__ == "__main__":
    main()
