#!/usr/bin/env python3
"""Packages sluice.wasm as an OCI image layout that Istio's WasmPlugin can pull.

The image follows the *compat* variant of the Wasm image specification
(solo-io/wasm, spec/spec-compat.md), the first format Istio's image fetcher
tries:

  manifest  application/vnd.oci.image.manifest.v1+json,
            annotation module.wasm.image/variant=compat
  config    application/vnd.oci.image.config.v1+json (os wasip1, arch wasm)
  layer     application/vnd.oci.image.layer.v1.tar+gzip, one tar entry:
            plugin.wasm, the module byte for byte

Istio's *oci* variant (a raw application/vnd.module.wasm.content.layer.v1+wasm
layer) is only accepted with a second, runtime-config layer, and registries
and tools handle custom media types unevenly; the compat image is an ordinary
single-layer image that docker, skopeo, crane and oras all copy as it is.

The output directory is an OCI image layout (oci-layout, index.json,
blobs/sha256/...) whose index names the manifest with
org.opencontainers.image.ref.name = the tag. It is rebuilt from scratch on
every run, and the same module and tag give the same bytes (no timestamps,
fixed owners and modes, gzip mtime 0), so the manifest digest identifies the
module. The digest is printed on stdout (`sha256:<hex>`); it is what a
WasmPlugin's `sha256` field pins. Nothing is pushed.

Usage: oci.py --wasm target/wasm32-wasip1/release/sluice.wasm
              [--out target/oci/sluice] [--tag 0.1.0]
The tag defaults to the workspace version in Cargo.toml.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import re
import tempfile
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_MAGIC = b"\0asm\x01\0\0\0"
# The OCI distribution spec's tag grammar.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
REPO = Path(__file__).resolve().parent.parent


class PackError(Exception):
    """Why the layout could not be written."""


def workspace_version():
    try:
        import tomllib  # Python 3.11+

        with open(REPO / "Cargo.toml", "rb") as f:
            return tomllib.load(f)["workspace"]["package"]["version"]
    except (ImportError, OSError, KeyError, ValueError) as e:
        raise PackError(f"cannot read the workspace version from Cargo.toml ({e!r}); pass --tag") from e


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(module):
    """The uncompressed layer: a tar holding only plugin.wasm."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(module)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def gzip_bytes(data):
    buf = io.BytesIO()
    # No file name and mtime 0 in the header, so the bytes depend on the data only.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def descriptor(media_type, blob, annotations=None):
    d = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    if annotations:
        d["annotations"] = annotations
    return d


def build(module, tag):
    """Returns (blobs, index, manifest digest) for the module."""
    if not TAG.fullmatch(tag):
        raise PackError(f"tag {tag!r} is not a valid OCI tag")
    if not module.startswith(WASM_MAGIC):
        raise PackError("not a WebAssembly module (no \\0asm version 1 header)")
    tar = layer_tar(module)
    layer = gzip_bytes(tar)
    config = canonical({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": descriptor(CONFIG, config),
        "layers": [descriptor(LAYER, layer)],
        "annotations": {
            "module.wasm.image/variant": "compat",
            "org.opencontainers.image.title": "sluice",
            "org.opencontainers.image.version": tag,
        },
    })
    manifest_desc = descriptor(MANIFEST, manifest, {"org.opencontainers.image.ref.name": tag})
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [manifest_desc]}
    return [config, layer, manifest], index, manifest_desc["digest"]


def write_layout(out, blobs, index):
    """Writes the layout beside `out`, then swaps it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        (tmp / "blobs" / "sha256").mkdir(parents=True)
        for blob in blobs:
            (tmp / "blobs" / "sha256" / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
        (tmp / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
        (tmp / "index.json").write_bytes(canonical(index))
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv):
    parser = argparse.ArgumentParser(description="Write sluice.wasm as an OCI image layout (Istio compat variant).")
    parser.add_argument("--wasm", required=True, type=Path, help="the module to package")
    parser.add_argument("--out", type=Path, default=REPO / "target" / "oci" / "sluice", help="layout directory (replaced)")
    parser.add_argument("--tag", help="org.opencontainers.image.ref.name (default: the workspace version)")
    args = parser.parse_args(argv)
    try:
        tag = args.tag or workspace_version()
        module = args.wasm.read_bytes()
        blobs, index, digest = build(module, tag)
        write_layout(args.out, blobs, index)
    except (OSError, PackError) as e:
        print(f"oci.py: {e}", file=sys.stderr)
        return 1
    print(f"oci.py: wrote {args.out} ({tag}): plugin.wasm {len(module)} bytes", file=sys.stderr)
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
