#!/usr/bin/env python3
"""Builds the seed corpora fuzz/corpus/<target>/ from the shared corpus and the repository.

Usage (from anywhere):  python3 fuzz/seeds.py [SHARED_CORPUS]   (default /work/shared/corpus)

Nothing here is committed: fuzz/corpus is git-ignored. Re-running only adds files.
"""

import bz2
import hashlib
import pathlib
import re
import struct
import sys

FUZZ = pathlib.Path(__file__).resolve().parent
REPO = FUZZ.parent
SHARED = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/corpus")
CORPUS = FUZZ / "corpus"
MAX_CAPTURE = 1 << 20  # the -max_len of capture and nfcapd


def put(target, data, name=None):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()
    (d / name).write_bytes(data)


# ------------------------------------------------------------------ netflow (framed datagrams)
def frame(datagrams, cfg=0):
    """The netflow target's input: config byte, then (u16 exporter<<14 | len, datagram)*."""
    out = bytes([cfg])
    for exporter, d in datagrams:
        assert len(d) < 1 << 14
        out += struct.pack(">H", exporter << 14 | len(d)) + d
    return out


dats = sorted((SHARED / "datagrams").glob("*.dat"))
groups = {}
for p in dats:
    data = p.read_bytes()
    put("netflow", frame([(0, data)]), p.stem)
    key = re.split(r"_(?:tpls?|opttpl|tplopt|tpldata|data)", p.stem)[0]
    groups.setdefault(key, []).append(p)
for key, files in groups.items():
    if len(files) < 2:
        continue
    # templates first, then data; and data first (held pending) then templates
    tpl_first = sorted(files, key=lambda p: ("tpl" not in p.stem, p.stem))
    dgs = [(0, p.read_bytes()) for p in tpl_first]
    put("netflow", frame(dgs), key + ".tpl-first")
    put("netflow", frame(list(reversed(dgs)), cfg=0x13), key + ".data-first")
    # the same datagrams from two exporters, interleaved
    put("netflow", frame([(i % 2, d) for i, (_, d) in enumerate(dgs + dgs)]), key + ".two")


# ------------------------------------------------------------------ sflow (spec-built datagrams)
def w(x):
    return struct.pack(">I", x)


def tagged(enterprise, fmt, body):
    return w(enterprise << 12 | fmt) + w(len(body)) + body


def sflow_datagram(samples, agent=b"\x0a\x00\x00\x01"):
    atype = {0: 0, 4: 1, 16: 2}[len(agent)]
    return w(5) + w(atype) + agent + w(0) + w(42) + w(3_600_000) + w(len(samples)) + b"".join(samples)


def flow_sample(rate, records, expanded=False):
    if expanded:
        head = w(8) + w(0) + w(70_000) + w(rate) + w(9_000_000) + w(0) + w(0) + w(70_000) + w(0) + w(70_001)
        return tagged(0, 3, head + w(len(records)) + b"".join(records))
    head = w(7) + w(3) + w(rate) + w(1_000_000) + w(0) + w(3) + w(4)
    return tagged(0, 1, head + w(len(records)) + b"".join(records))


def raw_header(protocol, frame_length, header):
    b = w(protocol) + w(frame_length) + w(4) + w(len(header)) + header
    b += b"\0" * (-len(b) % 4)
    return tagged(0, 1, b)


def ipv4(proto, ttl, src, dst, l4):
    total = 20 + len(l4)
    return bytes([0x45, 0]) + struct.pack(">H", total) + bytes([0, 1, 0x40, 0, ttl, proto, 0, 0]) + src + dst + l4


def ipv6(nh, hop, src, dst, l4):
    return bytes([0x60, 0, 0, 0]) + struct.pack(">H", len(l4)) + bytes([nh, hop]) + src + dst + l4


def tcp(sp, dp, flags):
    return struct.pack(">HH", sp, dp) + b"\0" * 8 + bytes([0x50, flags, 0xFA, 0xF0]) + b"\0" * 4


def eth(ethertype, payload, vlan=None):
    f = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02"
    if vlan is not None:
        f += struct.pack(">HH", 0x8100, vlan)
    return f + struct.pack(">H", ethertype) + payload


A, B = bytes([10, 0, 0, 5]), bytes([93, 184, 216, 34])
A6 = bytes.fromhex("20010db8000000000000000000000005")
B6 = bytes.fromhex("20010db8000000000000000000000053")
syn = ipv4(6, 128, A, B, tcp(49152, 443, 0x02))
udp6 = ipv6(17, 64, A6, B6, struct.pack(">HHHH", 54321, 53, 8, 0))
icmp = ipv4(1, 64, A, B, bytes([8, 0, 0, 0, 0, 1, 0, 1]))
ipv4_rec = tagged(0, 3, w(1500) + w(6) + A + B + w(51000) + w(443) + w(0x18) + w(0))
ipv6_rec = tagged(0, 4, w(1500) + w(17) + A6 + B6 + w(5353) + w(5353) + w(0) + w(0))
counters = tagged(0, 2, w(1) + w(3) + w(1) + tagged(0, 1, b"\0" * 88))
sflow_seeds = [
    sflow_datagram([flow_sample(400, [raw_header(1, 70, eth(0x0800, syn, vlan=10))])]),
    sflow_datagram([flow_sample(1, [raw_header(12, 0, udp6)], expanded=True)], agent=A6),
    sflow_datagram([flow_sample(1000, [ipv4_rec])], agent=b""),
    sflow_datagram([flow_sample(3, [ipv6_rec, raw_header(11, 28, icmp)])]),
    sflow_datagram([counters, tagged(4413, 5, b"\1\2\3\4"), flow_sample(10, [tagged(9, 1, b"\0" * 8), ipv4_rec])]),
    sflow_datagram([flow_sample(5, [raw_header(1, 64, eth(0x86DD, udp6))]), flow_sample(5, [raw_header(1, 64, eth(0x0806, b"\0" * 28))])]),
]
for s in sflow_seeds:
    put("sflow", s)
for p in dats:  # as the brief asks: the NetFlow/IPFIX datagrams too (wrong version: early exits)
    put("sflow", p.read_bytes(), p.stem)

# ------------------------------------------------------------------ captures
for p in sorted((SHARED / "exports").glob("*-export.pcap")) + sorted((SHARED / "pcaps").glob("*.pcap*")):
    data = p.read_bytes()
    if len(data) <= MAX_CAPTURE:
        put("capture", data, p.name)

# ------------------------------------------------------------------ nfcapd (+ every codec)
def lzo_literals(p):
    n = len(p)
    if n == 0:
        out = b""
    elif n <= 3:
        out = bytes([17 + n])
    elif n <= 18:
        out = bytes([n - 3])
    else:
        rest = n - 18
        zeros = (rest - 1) // 255
        out = b"\0" + b"\0" * zeros + bytes([rest - zeros * 255])
    return out + p + b"\x11\0\0"


def lz4_literals(p):
    """An LZ4 block of one literal-only sequence."""
    n = len(p)
    if n < 15:
        return bytes([n << 4]) + p
    out = bytes([0xF0])
    rest = n - 15
    while rest >= 255:
        out += b"\xff"
        rest -= 255
    return out + bytes([rest]) + p


def zstd_raw(p):
    """A zstd frame of raw blocks (no compression), with the content size."""
    out = struct.pack("<I", 0xFD2FB528) + bytes([0xA0]) + struct.pack("<I", len(p))  # FCS 4 bytes, single segment
    chunks = [p[i : i + 128 * 1024] for i in range(0, len(p), 128 * 1024)] or [b""]
    for i, c in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        out += struct.pack("<I", (len(c) << 3) | last)[:3] + c
    return out


def repack(plain, codec, compress):
    off_appendix = struct.unpack_from("<Q", plain, 24)[0]
    out = bytearray(plain[:40])
    out[16] = codec
    pos = 40
    while pos + 12 <= len(plain):
        size = struct.unpack_from("<I", plain, pos + 4)[0]
        payload = plain[pos + 12 : pos + 12 + size]
        if pos == off_appendix:
            out[24:32] = struct.pack("<Q", len(out))
        packed = compress(payload)
        out += plain[pos : pos + 4] + struct.pack("<I", len(packed)) + plain[pos + 8 : pos + 12] + packed
        pos += 12 + size
    return bytes(out)


nfcapds = sorted((SHARED / "exports").glob("*.nfcapd"))
for p in nfcapds:
    put("nfcapd", p.read_bytes(), p.name)
for p in nfcapds[:12]:  # the same files through every codec the reader supports
    plain = p.read_bytes()
    for codec, name, fn in [(1, "lzo", lzo_literals), (2, "bz2", bz2.compress), (3, "lz4", lz4_literals), (4, "zstd", zstd_raw)]:
        put("nfcapd", repack(plain, codec, fn), f"{p.name}.{name}")

# ------------------------------------------------------------------ text readers
for p in sorted((SHARED / "exports").glob("*.nfdump.csv")) + sorted((REPO / "examples" / "flows").glob("*.jsonl")):
    put("text_readers", p.read_bytes(), p.name)
ndpi = SHARED / "enriched" / "ndpi-flows.csv"
if ndpi.exists():  # NFStream CSV: the header and the first 40 rows
    put("text_readers", b"".join(ndpi.read_bytes().splitlines(keepends=True)[:41]), "ndpi-flows.head.csv")
put(
    "text_readers",
    b'{"type":"IPFIX","time_received_ns":1681583295157626000,"sequence_num":2999,"sampling_rate":100,'
    b'"sampler_address":"192.168.0.1","time_flow_start_ns":1681583295157626000,"time_flow_end_ns":1681583296157626000,'
    b'"bytes":1500,"packets":1,"src_addr":"fd01::1","dst_addr":"fd01::2","etype":"IPv6","proto":"TCP",'
    b'"src_port":443,"dst_port":50001,"in_if":0,"out_if":0,"ip_ttl":57,"tcp_flags":18,"icmp_type":0,"icmp_code":0}\n'
    b'{"src_addr":"10.0.0.1","dst_addr":"10.0.0.2","proto":"ICMP","icmp_type":8,"icmp_code":0,"dst_port":0,'
    b'"time_flow_start_ns":"2023-04-15T18:28:15.157Z","sampling_rate":0}\n',
    "goflow2-v2.jsonl",
)
put(
    "text_readers",
    b'{"Type":"NETFLOW_V9","TimeReceived":1681583295,"SequenceNum":1,"SamplingRate":10,"SamplerAddress":"10.0.0.254",'
    b'"TimeFlowStart":1681583290,"TimeFlowEnd":1681583295,"TimeFlowStartMs":1681583290123,"TimeFlowEndMs":1681583295456,'
    b'"Bytes":4200,"Packets":7,"SrcAddr":"192.168.1.10","DstAddr":"17.253.53.207","Proto":6,"SrcPort":50200,'
    b'"DstPort":80,"TCPFlags":27,"IPTTL":64,"IcmpType":0,"IcmpCode":0}\n',
    "goflow2-v1.jsonl",
)

# ------------------------------------------------------------------ rules
for p in sorted((REPO / "rules" / "os-core").glob("*.rules")) + sorted((REPO / "tests" / "data").glob("*/*.rules")):
    put("rules", p.read_bytes(), f"{p.parent.name}-{p.name}")

# ------------------------------------------------------------------ pack_archive
# Byte 0 even: a raw tar stream (the target gzips it); odd: a .tar.gz file.
import gzip
import io
import tarfile


def pack_tar(fmt, extra=(), long_names=False):
    files = {
        "pack.yaml": b"name: acme\nversion: 0.1.0\nlicense: MIT\ndepends: {}\n",
        "rules/acme.rules": b'rule a {\n when peer.port == 443\n then software = "A" confidence 0.7\n}\n',
        "tests/acme.yaml": b"- name: c\n  flows: []\n  expect: {host: 192.168.1.1, absent: true}\n",
    }
    if long_names:
        files["rules/" + "n" * 150 + ".rules"] = b"# long\n"
    files.update(extra)
    digests = "".join(f"{hashlib.sha256(files[k]).hexdigest()}  {k}\n" for k in sorted(files))
    files["MANIFEST.sha256"] = digests.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for k in sorted(files):
            info = tarfile.TarInfo(f"acme-0.1.0/{k}")
            info.size = len(files[k])
            t.addfile(info, io.BytesIO(files[k]))
    return buf.getvalue()


for fmt, tag in [(tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax"), (tarfile.USTAR_FORMAT, "ustar")]:
    put("pack_archive", b"\0" + pack_tar(fmt), f"{tag}.tar")
    put("pack_archive", b"\1" + gzip.compress(pack_tar(fmt), mtime=0), f"{tag}.tar.gz")
for fmt, tag in [(tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax")]:
    put("pack_archive", b"\0" + pack_tar(fmt, long_names=True), f"{tag}-long.tar")
put("pack_archive", b"\0" + pack_tar(tarfile.GNU_FORMAT, {".hidden.rules": b"#\n"}), "hidden.tar")

for t in sorted(CORPUS.iterdir()):
    files = list(t.iterdir())
    print(f"{t.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")
