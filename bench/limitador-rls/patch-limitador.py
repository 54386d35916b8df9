#!/usr/bin/env python3
"""Widens two `cfg(feature = "disk_storage")` items of limitador 0.14.0 to
`redis_storage` too, in the unpacked crate at argv[1] (see Cargo.toml): the
Redis storage's key encoding calls them, and without them the crate does
not compile with `redis_storage` and without `disk_storage`. Nothing else
changes; exits non-zero unless each item is found exactly once."""

import sys

FROM = '#[cfg(feature = "disk_storage")]\n'
TO = '#[cfg(any(feature = "disk_storage", feature = "redis_storage"))]\n'
ITEMS = [
    ("src/storage/keys.rs", "pub mod bin {"),
    ("src/counter.rs", "    pub(crate) fn variables_for_key(&self)"),
]

root = sys.argv[1]
for path, item in ITEMS:
    path = f"{root}/{path}"
    text = open(path).read()
    indent = item[: len(item) - len(item.lstrip())]
    before = indent + FROM + item
    if text.count(before) != 1:
        sys.exit(f"{path}: expected one {before!r}")
    open(path, "w").write(text.replace(before, indent + TO + item))
