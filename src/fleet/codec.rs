//! The wire format of flow batches on the bus (version 1).
//!
//! A batch is one message. All integers little-endian; varints are LEB128 (unsigned).
//!
//! ```text
//! batch   = magic "FPB1" (4 bytes) | publisher id (16 bytes) | batch sequence (u64)
//!           | flow count (varint, ≤ 65,536) | flow*
//! flow    = flags (u8) | start_ms (i64) | duration_ms (varint)
//!           | src addr | dst addr | src_port (u16) | dst_port (u16) | proto (u8)
//!           | bytes, packets, rev_bytes, rev_packets (varints) | tcp_flags (u8)
//!           | sampling (varint)
//!           | [src_ttl (u8)] [dst_ttl (u8)] [src_name] [dst_name] [exporter addr]
//! addr    = family (u8: 4 or 6) | 4 or 16 bytes
//! name    = length (varint, ≤ 253) | bytes (UTF-8)
//! flags   = bit 0 src_ttl, 1 dst_ttl, 2 src_name, 3 dst_name, 4 exporter; bits 5–7 zero
//! ```
//!
//! (publisher id, batch sequence) names a batch uniquely ([`batch_id`]): it is the batch's
//! message id on the bus, so that the server stores a batch published twice (a retry after an
//! acknowledgement that did not come) once. A decoder refuses, with the byte offset, anything that does not
//! follow this: wrong magic or version, counts or lengths beyond their bounds, truncation,
//! unknown flag bits, trailing bytes. Nothing is allocated from a length field before it is
//! checked against the bytes that remain.

use crate::flow::{Flow, normalize_name};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The format's magic and version.
pub const MAGIC: &[u8; 4] = b"FPB1";
/// Most flows in one batch.
pub const MAX_FLOWS: usize = 65_536;

/// A decoded batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Who published it.
    pub publisher: [u8; 16],
    /// The publisher's sequence number of the batch.
    pub seq: u64,
    /// The flows.
    pub flows: Vec<Flow>,
}

/// A message that is not a valid batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("flow batch, byte {offset}: {reason}")]
pub struct DecodeError {
    /// Where.
    pub offset: usize,
    /// What.
    pub reason: String,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_addr(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn put_name(out: &mut Vec<u8>, n: &str) {
    let b = &n.as_bytes()[..n.len().min(253)];
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes a batch.
pub fn encode(publisher: [u8; 16], seq: u64, flows: &[Flow]) -> Vec<u8> {
    let flows = &flows[..flows.len().min(MAX_FLOWS)];
    let mut out = Vec::with_capacity(32 + flows.len() * 48);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&publisher);
    out.extend_from_slice(&seq.to_le_bytes());
    put_varint(&mut out, flows.len() as u64);
    for f in flows {
        let flags = u8::from(f.src_ttl.is_some())
            | u8::from(f.dst_ttl.is_some()) << 1
            | u8::from(f.src_name.is_some()) << 2
            | u8::from(f.dst_name.is_some()) << 3
            | u8::from(f.exporter.is_some()) << 4;
        out.push(flags);
        out.extend_from_slice(&f.start_ms.to_le_bytes());
        put_varint(&mut out, f.duration_ms());
        put_addr(&mut out, f.src);
        put_addr(&mut out, f.dst);
        out.extend_from_slice(&f.src_port.to_le_bytes());
        out.extend_from_slice(&f.dst_port.to_le_bytes());
        out.push(f.proto);
        for v in [f.bytes, f.packets, f.rev_bytes, f.rev_packets] {
            put_varint(&mut out, v);
        }
        out.push(f.tcp_flags);
        put_varint(&mut out, u64::from(f.sampling));
        if let Some(t) = f.src_ttl {
            out.push(t);
        }
        if let Some(t) = f.dst_ttl {
            out.push(t);
        }
        if let Some(n) = &f.src_name {
            put_name(&mut out, n);
        }
        if let Some(n) = &f.dst_name {
            put_name(&mut out, n);
        }
        if let Some(e) = f.exporter {
            put_addr(&mut out, e);
        }
    }
    out
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, DecodeError> {
        Err(DecodeError {
            offset: self.at,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.b.get(self.at..self.at.saturating_add(n)) {
            Some(s) if self.at.checked_add(n).is_some() => {
                self.at += n;
                Ok(s)
            }
            _ => self.fail(format!("truncated: {n} more bytes expected")),
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return self.fail("varint overflows 64 bits");
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("varint longer than 10 bytes")
    }

    fn addr(&mut self) -> Result<IpAddr, DecodeError> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(self.take(4)?).expect("4 bytes"),
            ))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(self.take(16)?).expect("16 bytes"),
            ))),
            f => self.fail(format!("address family {f} (4 or 6 expected)")),
        }
    }

    fn name(&mut self) -> Result<Option<std::sync::Arc<str>>, DecodeError> {
        let n = self.varint()?;
        if n > 253 {
            return self.fail(format!("name of {n} bytes (at most 253)"));
        }
        let b = self.take(n as usize)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(normalize_name(s)),
            Err(_) => self.fail("name is not UTF-8"),
        }
    }
}

/// A publisher id as it appears in batch names and subjects: 32 lower-case hex digits.
pub fn publisher_hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of an encoded batch, `<publisher id in hex>-<batch sequence>`, read from its header
/// alone; `None` for bytes that do not start like a batch.
pub fn batch_id(bytes: &[u8]) -> Option<String> {
    let key = batch_key(bytes)?;
    let publisher = publisher_hex(key[..16].try_into().ok()?);
    let seq = u64::from_le_bytes(key[16..].try_into().ok()?);
    Some(format!("{publisher}-{seq}"))
}

/// The raw bytes of a batch's id (publisher id, then sequence), from its header alone; `None`
/// for bytes that do not start like a batch. The form [`batch_id`] prints.
pub fn batch_key(bytes: &[u8]) -> Option<[u8; 24]> {
    if bytes.len() < 28 || &bytes[..4] != MAGIC {
        return None;
    }
    bytes[4..28].try_into().ok()
}

/// Decodes a batch (see the module docs for what is refused).
pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
    let mut r = Reader { b: bytes, at: 0 };
    if r.take(4)? != MAGIC {
        return r.fail("not a flowprint flow batch of version 1 (magic FPB1)");
    }
    let publisher: [u8; 16] = r.take(16)?.try_into().expect("16 bytes");
    let seq = r.u64()?;
    let count = r.varint()?;
    if count > MAX_FLOWS as u64 {
        return r.fail(format!("{count} flows in one batch (at most {MAX_FLOWS})"));
    }
    // The smallest flow takes 31 bytes: never reserve more than the bytes left can hold.
    let mut flows = Vec::with_capacity((count as usize).min(bytes.len() / 31 + 1));
    for _ in 0..count {
        let flags = r.u8()?;
        if flags & 0xe0 != 0 {
            return r.fail(format!("unknown flag bits {flags:#04x}"));
        }
        let start_ms = r.u64()? as i64;
        let duration = r.varint()?;
        let src = r.addr()?;
        let dst = r.addr()?;
        let src_port = r.u16()?;
        let dst_port = r.u16()?;
        let proto = r.u8()?;
        let mut f = Flow::new(src, src_port, dst, dst_port, proto);
        f.start_ms = start_ms;
        f.end_ms = start_ms.saturating_add(duration.min(i64::MAX as u64) as i64);
        f.bytes = r.varint()?;
        f.packets = r.varint()?;
        f.rev_bytes = r.varint()?;
        f.rev_packets = r.varint()?;
        f.tcp_flags = r.u8()?;
        f.sampling = u32::try_from(r.varint()?).unwrap_or(u32::MAX).max(1);
        if flags & 1 != 0 {
            f.src_ttl = Some(r.u8()?);
        }
        if flags & 2 != 0 {
            f.dst_ttl = Some(r.u8()?);
        }
        if flags & 4 != 0 {
            f.src_name = r.name()?;
        }
        if flags & 8 != 0 {
            f.dst_name = r.name()?;
        }
        if flags & 16 != 0 {
            f.exporter = Some(r.addr()?);
        }
        flows.push(f);
    }
    if r.at != bytes.len() {
        return r.fail(format!("{} trailing bytes", bytes.len() - r.at));
    }
    Ok(Batch {
        publisher,
        seq,
        flows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Flow> {
        let mut a = Flow::new(
            "192.168.1.10".parse().unwrap(),
            50123,
            "13.107.4.52".parse().unwrap(),
            80,
            6,
        );
        a.start_ms = 1_714_557_600_000;
        a.end_ms = a.start_ms + 1234;
        a.bytes = 412;
        a.packets = 5;
        a.rev_bytes = 320;
        a.rev_packets = 4;
        a.tcp_flags = 0x1b;
        a.src_ttl = Some(128);
        a.dst_name = normalize_name("www.msftconnecttest.com");
        a.exporter = Some("10.0.0.1".parse().unwrap());
        let mut b = Flow::new(
            "fe80::1".parse().unwrap(),
            5353,
            "ff02::fb".parse().unwrap(),
            5353,
            17,
        );
        b.sampling = 100;
        vec![a, b]
    }

    #[test]
    fn round_trip() {
        let flows = sample();
        let bytes = encode([7; 16], 42, &flows);
        let b = decode(&bytes).unwrap();
        assert_eq!((b.publisher, b.seq), ([7; 16], 42));
        assert_eq!(b.flows, flows);
        assert_eq!(batch_id(&bytes).unwrap(), format!("{}-42", "07".repeat(16)));
        assert_eq!(batch_id(&bytes[..27]), None);
        assert_eq!(batch_id(b"not a batch, but long enough.."), None);
    }

    #[test]
    fn every_truncation_and_bad_byte_is_an_error_not_a_panic() {
        let bytes = encode([1; 16], 1, &sample());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes accepted");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).unwrap_err().reason.contains("trailing"));
        let mut wrong = bytes.clone();
        wrong[3] = b'2';
        assert!(decode(&wrong).unwrap_err().reason.contains("magic"));
        // A huge count with no bytes behind it allocates nothing and fails.
        let mut huge = bytes[..28].to_vec();
        put_varint(&mut huge, 60_000);
        assert!(decode(&huge).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&data);
            let _ = decode(&data);
            let _ = decode(&with_magic);
        }
    }
}
