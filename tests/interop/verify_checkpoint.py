#!/usr/bin/env python3
"""Independent verifier of an nrfca bundle's checkpoint evidence (written from RFC 9162 and
docs/formats.md alone; it imports nothing from nrfca).

    verify_checkpoint.py --ca-cert ca.pem --checkpoint checkpoint --sig checkpoint.sig \
        --proofs checkpoint.proofs [--old OLD_CHECKPOINT ...]

Checks:
  1. `checkpoint` is exactly three LF-terminated lines: `nrfca/<sha256 of the CA cert DER>`,
     a decimal tree size, a base64 32-byte root;
  2. `checkpoint.sig` (base64 DER ECDSA-SHA256 over the exact bytes of `checkpoint`) verifies
     with the CA certificate's public key (`cryptography`);
  3. `checkpoint.proofs`: its origin and `to` line equal the checkpoint, and every consistency
     proof verifies by RFC 9162 section 2.1.4.2;
  4. each `--old` checkpoint file (same body format, e.g. one printed in a ceremony record)
     has a proof in the file, or is the checkpoint itself.

Exit 0 when all hold; 1 with a reason on stderr otherwise; 2 on usage errors.
"""

import argparse
import base64
import binascii
import hashlib
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

EMPTY_ROOT = hashlib.sha256(b"").digest()


class Reject(Exception):
    pass


def b64hash(text):
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Reject("not base64: %r" % text)
    if len(raw) != 32 or base64.b64encode(raw).decode() != text:
        raise Reject("not a canonical base64 SHA-256 hash: %r" % text)
    return raw


def size_of(text):
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise Reject("not a tree size: %r" % text)
    n = int(text)
    if n >= 2**64:
        raise Reject("tree size too large")
    return n


def parse_checkpoint(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Reject("checkpoint is not UTF-8")
    if not text.endswith("\n"):
        raise Reject("checkpoint: last line does not end in LF")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        raise Reject("checkpoint: %d lines, expected 3" % len(lines))
    origin, size, root = lines
    fp = origin[len("nrfca/"):]
    if not origin.startswith("nrfca/") or len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise Reject("checkpoint: bad origin line %r" % origin)
    return origin, size_of(size), b64hash(root)


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_consistency(first, second, first_hash, second_hash, path):
    """RFC 9162 section 2.1.4.2, step by step."""
    if first > second:
        raise Reject("old size %d is beyond new size %d" % (first, second))
    if first == second:
        if path:
            raise Reject("a proof between equal sizes must be empty")
        if first_hash != second_hash:
            raise Reject("same size, different roots")
        return
    if first == 0:
        if path or first_hash != EMPTY_ROOT:
            raise Reject("a proof from the empty tree must be empty, from the empty root")
        return
    if not path:
        raise Reject("empty consistency proof")
    path = list(path)
    # 1. If first is an exact power of 2, prepend first_hash to the consistency_path.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 2. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 3. If LSB(fn) is set, right-shift both fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 4. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 5. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        if sn == 0:
            raise Reject("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    # 6. fr == first_hash, sr == second_hash, sn == 0.
    if sn != 0:
        raise Reject("consistency proof too short")
    if fr != first_hash:
        raise Reject("consistency proof does not give the old root")
    if sr != second_hash:
        raise Reject("consistency proof does not give the new root")


def parse_proofs(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Reject("proofs file is not UTF-8")
    if not text.endswith("\n"):
        raise Reject("proofs file: last line does not end in LF")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or lines[0] != "nrfca-consistency-proofs v1":
        raise Reject("proofs file: bad header")
    if not lines[1].startswith("origin "):
        raise Reject("proofs file: bad origin line")
    origin = lines[1][len("origin "):]
    to = lines[2].split(" ")
    if len(to) != 3 or to[0] != "to":
        raise Reject("proofs file: bad `to` line")
    new = (size_of(to[1]), b64hash(to[2]))
    proofs = []
    i = 3
    while i < len(lines):
        parts = lines[i].split(" ")
        if len(parts) != 4 or parts[0] != "from":
            raise Reject("proofs file: line %d is not a `from` line" % (i + 1))
        old_size, old_root, count = size_of(parts[1]), b64hash(parts[2]), size_of(parts[3])
        if count > 65 or i + 1 + count > len(lines):
            raise Reject("proofs file: line %d announces %d hashes" % (i + 1, count))
        hashes_ = [b64hash(h) for h in lines[i + 1:i + 1 + count]]
        proofs.append((old_size, old_root, hashes_))
        i += 1 + count
    return origin, new, proofs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ca-cert", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--sig", required=True)
    ap.add_argument("--proofs", required=True)
    ap.add_argument("--old", action="append", default=[])
    a = ap.parse_args()

    def read(p):
        with open(p, "rb") as f:
            return f.read()

    try:
        cert = x509.load_pem_x509_certificate(read(a.ca_cert))
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise Reject("the CA key is not P-256")
        fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

        body = read(a.checkpoint)
        origin, size, root = parse_checkpoint(body)
        if origin != "nrfca/" + fingerprint:
            raise Reject("checkpoint is for %s, not for this CA (nrfca/%s)" % (origin, fingerprint))
        sig_text = read(a.sig).decode("ascii", "replace")
        if sig_text.endswith("\n"):
            sig_text = sig_text[:-1]
        try:
            sig = base64.b64decode(sig_text, validate=True)
        except (binascii.Error, ValueError):
            raise Reject("checkpoint.sig is not base64")
        try:
            key.verify(sig, body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Reject("checkpoint.sig does not verify with the CA key")

        p_origin, new, proofs = parse_proofs(read(a.proofs))
        if p_origin != origin or new != (size, root):
            raise Reject("the proofs file is not for this checkpoint")
        for old_size, old_root, path in proofs:
            verify_consistency(old_size, size, old_root, root, path)

        for old_path in a.old:
            o_origin, o_size, o_root = parse_checkpoint(read(old_path))
            if o_origin != origin:
                raise Reject("%s is a checkpoint of another CA" % old_path)
            if (o_size, o_root) == (size, root):
                continue
            if not any((s, r) == (o_size, o_root) for s, r, _ in proofs):
                raise Reject("no proof from %s (size %d)" % (old_path, o_size))
    except Reject as e:
        print("REJECT: %s" % e, file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print("REJECT: %s" % e, file=sys.stderr)
        return 1
    print("OK %s size %d: signature and %d consistency proof(s) verified" % (origin, size, len(proofs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
