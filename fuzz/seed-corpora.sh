#!/usr/bin/env bash
# Generate the seed corpora of every fuzz target into fuzz/corpus/<target>/ (git-ignored)
# from real and generated nrfca outputs:
#   - the real modem KEYGEN of the seed tutorial (shared/seed/000_*.txt, or the copy below),
#   - `nrfca gen` strings (bare lines and requests CSV),
#   - `nrfca demo` (CA, requests.csv, signed bundle, exported audit log JSONL + CSV),
#   - `nrfca sign --pem-files` bundles,
#   - AT transcripts in the style of src/bench/at.rs and tests/sim.rs,
#   - CSRs made by OpenSSL (P-256, P-384, RSA) when `openssl` is on PATH.
# Also writes fuzz/corpus/audit-ca.pem (the CA the `audit` target verifies against).
#
# Usage: fuzz/seed-corpora.sh [--keep]   (NRFCA=/path/to/nrfca to use a given binary)
# Needs: python3; builds the debug binary with `cargo build` unless $NRFCA is set.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
corpus="$here/corpus"
keep=0
[ "${1:-}" = "--keep" ] && keep=1

if [ -z "${NRFCA:-}" ]; then
    (cd "$root" && cargo build --quiet)
    NRFCA="$root/target/debug/nrfca"
fi
work="$(mktemp -d)"
if [ "$keep" = 1 ]; then
    echo "work directory kept: $work" >&2
else
    trap 'rm -rf "$work"' EXIT
fi

echo "seed-corpora: generating outputs in $work" >&2
"$NRFCA" demo --latency test --devices 3 --dir "$work/demo" >/dev/null 2>&1
"$NRFCA" audit export --ca-dir "$work/demo/ca" --out "$work/audit.csv" --format csv \
    --operator fuzz >/dev/null 2>&1
"$NRFCA" gen --count 50 --format lines --out "$work/keygen.txt" >/dev/null 2>&1
"$NRFCA" gen --count 20 --format csv --out "$work/requests.csv" >/dev/null 2>&1
"$NRFCA" gen --count 5 --format lines --sec-tag 42 --out "$work/keygen42.txt" >/dev/null 2>&1
# A second bundle with --pem-files and a reject (the sec_tag-42 strings).
NRFCA_PASSPHRASE=demo "$NRFCA" sign --ca-dir "$work/demo/ca" --out "$work/bundle2" \
    --pem-files --operator fuzz "$work/requests.csv" "$work/keygen42.txt" >/dev/null 2>&1 || true

if command -v openssl >/dev/null; then
    for spec in "ec -pkeyopt ec_paramgen_curve:P-256" "ec -pkeyopt ec_paramgen_curve:P-384" \
        "rsa:2048"; do
        n=$(echo "$spec" | tr -c 'a-zA-Z0-9' '_')
        # shellcheck disable=SC2086
        openssl req -new -newkey $spec -nodes -keyout /dev/null -subj \
            "/CN=50503041-3539-47eb-807b-102dbb423b9a/O=Fuzz" -outform DER \
            -out "$work/csr_$n.der" 2>/dev/null || true
    done
fi

seed_file=""
for f in "$root/../shared/seed/"000_*.txt /work/shared/seed/000_*.txt; do
    [ -f "$f" ] && seed_file="$f" && break
done

mkdir -p "$corpus"
WORK="$work" CORPUS="$corpus" SEED_FILE="$seed_file" python3 - <<'PY'
import base64, hashlib, json, os, re, struct, glob

work = os.environ["WORK"]; corpus = os.environ["CORPUS"]
SEED = ("MIIBCzCBrwIBADAvMS0wKwYDVQQDDCQ1MDUwMzA0MS0zNTM5LTQ3ZWItODA3Yi0xMDJkYmI0MjNiOWEwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARhKkti_3EVfSEy7oDyaqqj2cTmlfmhuMdcMOH9xkIX3okdPIFrAZ0sI5xt6WdY56IyQSj8Ce5SxGzMKUuP5ueDoB4wHAYJKoZIhvcNAQkOMQ8wDTALBgNVHQ8EBAMCA-gwDAYIKoZIzj0EAwIFAANJADBGAiEA3AZcIwq61M7PRjdA04z863FmW7mvbgb3lB7YU0bi16QCIQCMbqds9nxdq0XL61QxyuKUgZjPc6Za2-1OUPCVXz9rng"
        ".0oRDoQEmoQRBIVhP2dn3hQlQUFAwQTU5R-uAexAtu0I7mkUaAQEAAVgg5g6Cvkt1g0bATSADOVi0euYSuu-7bbBOGYZxgsDyI8tQfQoWN1WvLWECCTaLfZZH1FhAKXmhC0HEeHTZy7qAmgLFx0eRCrFHoHs7UmJ9nsgCgAwWTOEuMH0C6vaQ0OsUT-pDcEWP8tstbFsuvySeOEzHog")
if os.environ.get("SEED_FILE"):
    m = re.search(r'%KEYGEN: "([^"]+)"', open(os.environ["SEED_FILE"], errors="replace").read())
    if m:
        SEED = m.group(1)

def put(target, name, data):
    d = os.path.join(corpus, target); os.makedirs(d, exist_ok=True)
    if isinstance(data, str): data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f: f.write(data)

def rd(p, mode="rb"):
    with open(p, mode) as f: return f.read()

def b64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def enc_u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def cbor_head(major, n):
    if n < 24: return bytes([major << 5 | n])
    if n < 256: return bytes([major << 5 | 24, n])
    if n < 65536: return bytes([major << 5 | 25]) + struct.pack(">H", n)
    return bytes([major << 5 | 26]) + struct.pack(">I", n)

def bstr(b): return cbor_head(2, len(b)) + b

keygens = [SEED] + [l.strip() for l in rd(f"{work}/keygen.txt", "r").splitlines() if l.strip()]
keygens += [l.strip() for l in rd(f"{work}/keygen42.txt", "r").splitlines() if l.strip()]

# An ATTESTTOKEN in the modem's layout: message [1, uuid, type, fw_uuid, nonce], detached COSE.
msg = b"\xd9\xd9\xf7\x85\x01" + bstr(bytes(range(16))) + b"\x03" + bstr(b"\xaa" * 16) + bstr(b"\x55" * 16)
sign1 = b"\xd2\x84" + bstr(b"\xa1\x01\x26") + b"\xa1\x04\x41\x21" + b"\xf6" + bstr(b"\x42" * 64)
attest = enc_u(msg) + "." + enc_u(sign1)

# keygen: text
for i, k in enumerate(keygens):
    put("keygen", f"gen{i:02}", k)
put("keygen", "seed-wrapped", f'%KEYGEN: "{SEED}"\r\n')
put("keygen", "attesttoken", attest)
put("keygen", "attesttoken-wrapped", f'%ATTESTTOKEN: "{attest}"')
put("keygen", "csr-only", SEED.split(".")[0])

# keygen_halves, cbor, csr: the decoded halves
for i, k in enumerate(keygens[:20]):
    first, cose = (b64u(p) for p in k.split("."))
    put("keygen_halves", f"split{i:02}", b"\x00" + struct.pack(">H", len(first)) + first + cose)
    put("keygen_halves", f"wrap{i:02}", bytes([1 | (i % 4) * 2 if i % 3 else 1]) + first)
    put("csr", f"keygen{i:02}", first)
    put("cbor", f"cose{i:02}", cose)
    # The payload bstr of the COSE_Sign1 (tag 18, array 4, protected, unprotected, payload).
    m = re.search(rb"\x58([\x40-\x60])(\xd9\xd9\xf7\x85.*)", cose, re.S)
    if m:
        put("cbor", f"payload{i:02}", m.group(2)[: m.group(1)[0]])
put("cbor", "attest-msg", msg)
put("cbor", "attest-sign1", sign1)
for t in (0, 16842753, 2**31, 2**32 - 1):
    v = t if t < 2**31 else t - 2**32
    put("cbor", f"sectag{t}", (cbor_head(0, v) if v >= 0 else cbor_head(1, -1 - v)))
put("cbor", "nested", b"\x81" * 20 + b"\x00")
put("cbor", "map", b"\xa3\x01\x26\x04\x41\x21\x63abc\xf9\x3c\x00")

for p in glob.glob(f"{work}/csr_*.der"):
    put("csr", os.path.basename(p), rd(p))

def pem_ders(text):
    out = []
    for m in re.finditer(r"-----BEGIN ([A-Z ]+)-----\s*(.*?)-----END \1-----", text, re.S):
        out.append(base64.b64decode("".join(m.group(2).split())))
    return out

ca_pem = rd(f"{work}/demo/ca/ca.pem", "r")
for i, d in enumerate(pem_ders(ca_pem)):
    put("csr", f"ca-cert{i}", d)
certs_csv = rd(f"{work}/demo/bundle/certs.csv", "r")
for i, d in enumerate(pem_ders(certs_csv)[:3]):
    put("csr", f"device-cert{i}", d)

# requests: first byte = number of chunk-size bytes that follow
req_files = {
    "demo-csv": rd(f"{work}/demo/requests.csv"),
    "gen-csv": rd(f"{work}/requests.csv"),
    "gen-lines": rd(f"{work}/keygen.txt"),
    "mixed-lines": ("# bench 1\n\n" + f'%KEYGEN: "{keygens[1]}"\r\n' + keygens[2] + "\n  \n#x\nnot a keygen\n").encode(),
    "bom-crlf-csv": b"\xef\xbb\xbf" + rd(f"{work}/requests.csv").replace(b"\n", b"\r\n"),
    "quoted-csv": ("device_uuid,imei,sec_tag,keygen,modem_fw,model,bench,port,exported_at\n"
                    f'"a,b",1,"16842753","{keygens[3]}","x""y","multi\nline",b,p,t\n,,,\n"open\n').encode(),
    "bad-header": b"device_uuid,imei\n1,2\n",
}
for name, data in req_files.items():
    put("requests", name, b"\x00" + data[:60000])
    put("requests", name + "-chunked", b"\x03\x01\x05\x02" + data[:60000])

# bundle_csv
for b in ("demo/bundle", "bundle2"):
    bd = f"{work}/{b}"
    if not os.path.isdir(bd):
        continue
    tag = b.replace("/", "-")
    for f in ("certs.csv", "onboard.csv", "rejects.csv", "manifest.json"):
        if os.path.exists(f"{bd}/{f}"):
            put("bundle_csv", f"{tag}-{f}", rd(f"{bd}/{f}"))
    lines = rd(f"{bd}/certs.csv", "r")
    put("bundle_csv", f"{tag}-certs-auto.csv", re.sub(r",[0-9a-f]{64},\"-----BEGIN", ',auto,"-----BEGIN', lines))

# bundle_verify: "@@@ name" sections, digests/signature left to the target ("auto")
def bundle_seed(bd):
    out = b""
    man = json.loads(rd(f"{bd}/manifest.json"))
    man["ca_sha256"] = "auto"
    for f in man["files"]:
        f["sha256"] = "auto"
    out += b"@@@ manifest.json\n" + json.dumps(man, indent=2).encode() + b"\n"
    for f in man["files"]:
        content = b"auto" if f["name"] == "ca.pem" else rd(os.path.join(bd, f["name"]))
        out += b"@@@ " + f["name"].encode() + b"\n" + content + b"\n"
    return out
for b in ("demo/bundle", "bundle2"):
    if os.path.isdir(f"{work}/{b}"):
        s = bundle_seed(f"{work}/{b}")
        put("bundle_verify", b.replace("/", "-"), s)
        put("bundle_verify", b.replace("/", "-") + "-extra", s + b"@@@ stray.txt\nhello\n")
        put("bundle_verify", b.replace("/", "-") + "-badsig", s + b"@@@ manifest.sig\nMEUCIQ==\n")

# at: first line = command, rest = device bytes
KG = f'%KEYGEN: "{keygens[1]}"'
pem = ca_pem.replace("\n", "\r\n")
transcripts = [
    ("AT+CGSN", "352656109480783\r\nOK\r\n"),
    ("AT+CGSN=1", '+CGSN: "352656100367872"\r\nOK\r\n'),
    ("AT+CGMR", "AT+CGMR\r\nmfw_nrf9160_1.3.7\r\nOK\r\n"),
    ("AT+CGMM", "\r\nnRF9160-SICA\r\n\r\nOK\r\n"),
    ("AT%CMNG=2,4567,0", "+CME ERROR: 513\r\n"),
    ("AT+CFUN=4", "+CSCON: 1\r\n[00:00:28.460,540] <inf> asset_tracker: RRC mode: Connected\r\n+CEREG: 0\r\n\x1b[1;32m[00:00:28.467,834] <inf> x\x1b[0m\r\n+CSCON: 0\r\nOK\r\n"),
    ("AT%KEYGEN=16842753,2,0", f"%XMODEMSLEEP: 1, 5000\r\n{KG}\r\nOK\r\n"),
    ("AT%CMNG=2,16842753,0", f'%CMNG: 16842753,0,"ABCD","{pem}"\r\nOK\r\n'),
    ("AT+CEREG?", '+CEREG: 5,"0001","01A2",7\r\nOK\r\n'),
    ("AT", "*** Booting nRF Connect SDK v2.6.0 ***\r\nThe AT host sample started\r\nReady\r\nERROR\r\n"),
    ("AT%CMNG=1,16842753", '%CMNG: 16842753,0,"2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1"\r\n%CMNG: 16842753, 2, "00"\r\nOK\r\n'),
    ("AT+CMEE=1", "\x00\xff\xfe garbage\r\nOK\r\n"),
    ("AT%KEYGEN=1,2,0", '[00:01] <err> "unbalanced\r\n+CME ERROR: 523\r\n'),
    ("AT+CGSN=1", '+CGSN: "352656100367872"\r\n+CMS ERROR: 500\r\n'),
    ("AT%ATTESTTOKEN", f'%ATTESTTOKEN: "{attest}"\r\nOK\r\n'),
    ("AT%XMODEMUUID", "%XMODEMUUID: 50503041-3539-47eb-807b-102dbb423b9a\r\nOK\r\n"),
    ("AT#XSLMVER", '\r\n#XSLMVER: "2.6.0","mfw_nrf9160_1.3.7"\r\n\r\nOK\r\n'),
    ("AT", "uart:~$ at AT\r\nOK\r\n"),
]
for i, (cmd, reply) in enumerate(transcripts):
    put("at", f"t{i:02}", cmd.encode() + b"\n" + reply.encode("latin-1", "replace"))

# sim_at: profile byte, then host bytes
cert = ca_pem.strip("\n")
convo = ("AT+CMEE=1\r\nAT+CFUN?\r\nAT+CFUN=4\r\nAT+CGSN=1\r\nAT+CGMR\r\nAT+CGMM\r\nAT%HWVERSION\r\n"
         "AT%XMODEMUUID\r\nAT%CMNG=1,16842753\r\nAT%KEYGEN=16842753,2,0\r\nAT%CMNG=1,16842753\r\n"
         f'AT%CMNG=0,16842753,0,"{cert}"\r\nAT%CMNG=1\r\nAT%CMNG=2,16842753,0\r\n'
         "AT%CMNG=3,16842753,0\r\nAT%ATTESTTOKEN\r\nAT%DEVICEUUID\r\nAT+CFUN=1\r\nAT+CEREG?\r\n")
for p in range(3):
    put("sim_at", f"convo{p}", bytes([p]) + convo.encode())
put("sim_at", "editing", b"\x00ATX\x08+CGSN\rAT%CMNG=0,1,0,\"a\r\nb\"\nAT\x00\r\n")
put("sim_at", "keygen-attrs", b"\x01AT+CFUN=4\rAT%KEYGEN=7,2,0,\"O=Acme,CN=x\"\rAT%KEYGEN=7,2,1\r")
put("sim_at", "slm", b"\x02AT#XSLMVER\r\nAT#XNRFCLOUD?\r\nAT#XRESET\r\nAT\r\n")

# audit: mode byte (bit 0 = re-chain), then the exported log
jsonl = rd(f"{work}/demo/audit.jsonl")
put("audit", "jsonl", b"\x00" + jsonl)
put("audit", "jsonl-rechain", b"\x01" + jsonl)
put("audit", "csv", b"\x00" + rd(f"{work}/audit.csv"))
with open(os.path.join(corpus, "audit-ca.pem"), "w") as f:
    f.write(ca_pem)

# inspect: a bit of everything
put("inspect", "keygen", SEED)
put("inspect", "attesttoken", attest)
put("inspect", "requests-csv", rd(f"{work}/requests.csv")[:60000])
put("inspect", "requests-lines", rd(f"{work}/keygen.txt")[:20000])
put("inspect", "ca-pem", ca_pem)
put("inspect", "certs-pem", "".join(re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", certs_csv, re.S)[:2]))
put("inspect", "csr-der", b64u(SEED.split(".")[0]))
put("inspect", "csr-pem", "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(b64u(SEED.split(".")[0])).decode() + "-----END CERTIFICATE REQUEST-----\n")
for p in glob.glob(f"{work}/csr_*.der"):
    put("inspect", os.path.basename(p), rd(p))

for t in sorted(os.listdir(corpus)):
    d = os.path.join(corpus, t)
    if os.path.isdir(d):
        print(f"  {t:<14} {len(os.listdir(d)):4} files")
PY
echo "seed-corpora: done; corpora in $corpus" >&2
