//! Reading packet captures (pcap and pcapng) that contain flow-export datagrams.
//!
//! [`read_capture`] walks a capture record by record and hands every complete UDP datagram (any
//! port) to a callback, borrowing one reused record buffer; the caller decides whether a payload
//! is NetFlow, IPFIX or sFlow. Supported:
//!
//! - pcap with microsecond or nanosecond timestamps, in either byte order;
//! - pcapng: Section Header (any number of sections, each with its own byte order), Interface
//!   Description (per-interface link type, `if_tsresol`, `if_tsoffset`), Enhanced, Simple and
//!   obsolete Packet blocks; every other block is skipped without being buffered;
//! - link types Ethernet (1, with any stack of up to eight 802.1Q / 802.1ad / QinQ tags), Linux
//!   cooked SLL (113) and SLL2 (276), raw IP (101, 228, 229), BSD loopback NULL (0, either byte
//!   order) and OpenBSD LOOP (108);
//! - IPv4 with options and IPv6 with hop-by-hop, routing, destination-options, fragment and AH
//!   extension headers.
//!
//! Every packet that yields no datagram is counted in [`CaptureStats::skipped`]: other protocols,
//! other link types, malformed headers, fragments (see [`CaptureStats::fragments`]: only whole,
//! unfragmented UDP datagrams are delivered — a first fragment is delivered only in the unusual
//! case that it holds the whole UDP datagram), and datagrams cut short by the capture's snap
//! length. Nothing is reassembled.
//!
//! Limits and errors: a record or block that claims more than [`MAX_RECORD`] captured bytes (a
//! pcapng block more than [`MAX_BLOCK`] bytes) is an `InvalidData` error naming its byte offset,
//! as are a bad magic, an unknown pcapng major version and a pcapng block whose two length
//! fields disagree. A capture that ends in the middle of a record or block (a capture tool
//! killed mid-write) is not an error: reading stops, the record's offset is reported in
//! [`CaptureStats::truncated_at`] and, when it was a packet, it is counted as skipped.
//!
//! ```
//! use flowprint::flow::capture::read_capture;
//!
//! // A pcap file header (little-endian, microseconds, Ethernet) and no records.
//! let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
//! file.extend_from_slice(&[0; 8]);
//! file.extend_from_slice(&65535u32.to_le_bytes());
//! file.extend_from_slice(&1u32.to_le_bytes());
//! let stats = read_capture(&file[..], &mut |d| println!("{} -> {}", d.src, d.dst)).unwrap();
//! assert_eq!((stats.packets, stats.datagrams), (0, 0));
//! ```

use std::io::{self, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The largest captured length of one packet that is accepted, in bytes.
pub const MAX_RECORD: usize = 256 * 1024;

/// The largest pcapng packet or interface block that is read into memory, in bytes: one
/// [`MAX_RECORD`] packet plus room for its options. Blocks of other types are skipped unread.
pub const MAX_BLOCK: usize = MAX_RECORD + 64 * 1024;

/// At most this many interfaces per pcapng section.
const MAX_INTERFACES: usize = 65_536;

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Capture time, ms since the Unix epoch (for a pcapng Simple Packet Block, which carries no
    /// time, the time of the packet before it, or 0).
    pub ts_ms: i64,
    /// Source address and UDP port.
    pub src: SocketAddr,
    /// Destination address and UDP port.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// Counts of one [`read_capture`] call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packet records read (pcap records; pcapng Enhanced, Simple and obsolete Packet blocks).
    pub packets: u64,
    /// UDP datagrams delivered to the callback.
    pub datagrams: u64,
    /// Packets that yielded no datagram: not UDP, not IP, unsupported link type, unknown pcapng
    /// interface, malformed, fragmented, cut short by the snap length or by the end of the file.
    /// Always `packets - datagrams`.
    pub skipped: u64,
    /// Of `skipped`, the IP fragments (IPv4 or IPv6).
    pub fragments: u64,
    /// Byte offset of a last record or block cut short by the end of the input, if any.
    pub truncated_at: Option<u64>,
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Whether `head` (the first bytes of a file, at least 4) starts a pcap file (micro- or
/// nanosecond, either byte order) or a pcapng file.
pub fn is_capture(head: &[u8]) -> bool {
    match head.get(..4) {
        Some(m) => m == PCAPNG_MAGIC || pcap_kind(m).is_some(),
        None => false,
    }
}

/// Reads a pcap or pcapng capture and calls `on_datagram` for every complete UDP datagram in it,
/// in file order. See the [module documentation](self) for what is supported and counted.
///
/// The reader is buffered internally; the payload handed to the callback is valid only during
/// the call.
pub fn read_capture<R: Read>(
    reader: R,
    on_datagram: &mut dyn FnMut(&Datagram<'_>),
) -> io::Result<CaptureStats> {
    let mut input = Input {
        r: BufReader::with_capacity(64 * 1024, reader),
        offset: 0,
    };
    let mut magic = [0u8; 4];
    let n = input.fill(&mut magic)?;
    if n < 4 || !is_capture(&magic) {
        return Err(invalid(
            0,
            "not a pcap or pcapng capture (unknown magic number)",
        ));
    }
    let mut reader = Records {
        input,
        buf: Vec::new(),
        stats: CaptureStats::default(),
        on_datagram,
    };
    if magic == PCAPNG_MAGIC {
        reader.pcapng()?;
    } else {
        reader.pcap(magic)?;
    }
    Ok(reader.stats)
}

fn invalid(offset: u64, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("capture byte {offset}: {what}"),
    )
}

/// Byte order of a pcap file or pcapng section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Little,
    Big,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let a: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(match self {
            Order::Little => u16::from_le_bytes(a),
            Order::Big => u16::from_be_bytes(a),
        })
    }

    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let a: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match self {
            Order::Little => u32::from_le_bytes(a),
            Order::Big => u32::from_be_bytes(a),
        })
    }

    fn i64(self, b: &[u8], at: usize) -> Option<i64> {
        let a: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(match self {
            Order::Little => i64::from_le_bytes(a),
            Order::Big => i64::from_be_bytes(a),
        })
    }
}

/// Byte order and "fraction is nanoseconds" of a pcap magic number.
fn pcap_kind(magic: &[u8]) -> Option<(Order, bool)> {
    match magic {
        [0xa1, 0xb2, 0xc3, 0xd4] => Some((Order::Big, false)),
        [0xd4, 0xc3, 0xb2, 0xa1] => Some((Order::Little, false)),
        [0xa1, 0xb2, 0x3c, 0x4d] => Some((Order::Big, true)),
        [0x4d, 0x3c, 0xb2, 0xa1] => Some((Order::Little, true)),
        _ => None,
    }
}

/// A reader that knows its byte offset.
struct Input<R> {
    r: R,
    offset: u64,
}

impl<R: Read> Input<R> {
    /// Fills `buf`; returns how many bytes were read (fewer only at the end of the input).
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    /// Discards `n` bytes; returns how many there were.
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let k = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        self.offset += k;
        Ok(k)
    }
}

/// One pcapng interface.
struct Interface {
    link: u32,
    snaplen: u32,
    /// Timestamp units per second (`if_tsresol`), `None` when the option is unusable.
    units_per_sec: Option<u128>,
    /// `if_tsoffset`, seconds.
    offset_s: i64,
}

impl Interface {
    fn ts_ms(&self, ts: u64) -> i64 {
        let Some(units) = self.units_per_sec.filter(|&u| u > 0) else {
            return 0;
        };
        let ms = i64::try_from(u128::from(ts) * 1000 / units).unwrap_or(i64::MAX);
        ms.saturating_add(self.offset_s.saturating_mul(1000))
    }
}

/// The state of one [`read_capture`] call.
struct Records<'c, R> {
    input: Input<R>,
    buf: Vec<u8>,
    stats: CaptureStats,
    on_datagram: &'c mut dyn FnMut(&Datagram<'_>),
}

impl<R: Read> Records<'_, R> {
    /// Reads `n` bytes into the record buffer; `false` when the input ends first.
    fn read_buf(&mut self, n: usize) -> io::Result<bool> {
        self.buf.resize(n, 0);
        Ok(self.input.fill(&mut self.buf[..n])? == n)
    }

    /// Records a packet cut short by the end of the input at `offset`.
    fn cut_packet(&mut self, offset: u64) {
        self.stats.packets += 1;
        self.stats.skipped += 1;
        self.stats.truncated_at = Some(offset);
    }

    fn pcap(&mut self, magic: [u8; 4]) -> io::Result<()> {
        let (order, nanos) = pcap_kind(&magic).ok_or_else(|| invalid(0, "bad pcap magic"))?;
        let mut header = [0u8; 24];
        header[..4].copy_from_slice(&magic);
        if self.input.fill(&mut header[4..])? < 20 {
            return Err(invalid(0, "pcap file header cut short"));
        }
        // The link-type field carries FCS information in its upper bits.
        let link = order.u32(&header, 20).unwrap_or(0) & 0xffff;
        let mut record = [0u8; 16];
        loop {
            let at = self.input.offset;
            match self.input.fill(&mut record)? {
                0 => return Ok(()),
                16 => {}
                _ => {
                    self.cut_packet(at);
                    return Ok(());
                }
            }
            let field = |i| order.u32(&record, i).unwrap_or(0);
            let (secs, frac, caplen) = (field(0), field(4), field(8) as usize);
            if caplen > MAX_RECORD {
                return Err(invalid(
                    at,
                    format!("record claims {caplen} captured bytes (limit {MAX_RECORD})"),
                ));
            }
            if !self.read_buf(caplen)? {
                self.cut_packet(at);
                return Ok(());
            }
            let frac_ms = if nanos { frac / 1_000_000 } else { frac / 1000 };
            let ts_ms = i64::from(secs) * 1000 + i64::from(frac_ms);
            self.stats.packets += 1;
            deliver(
                link,
                ts_ms,
                &self.buf,
                &mut self.stats,
                &mut *self.on_datagram,
            );
        }
    }

    fn pcapng(&mut self) -> io::Result<()> {
        let mut order = Order::Little;
        let mut interfaces: Vec<Interface> = Vec::new();
        let mut last_ts_ms = 0i64;
        // The first block's type was read as the file magic.
        let mut first = true;
        loop {
            let mut head = [0u8; 8];
            let (at, have) = if first {
                first = false;
                head[..4].copy_from_slice(&PCAPNG_MAGIC);
                (0, 4 + self.input.fill(&mut head[4..])?)
            } else {
                (self.input.offset, self.input.fill(&mut head)?)
            };
            if have == 0 {
                return Ok(());
            }
            if have < 8 {
                self.stats.truncated_at = Some(at);
                return Ok(());
            }
            if head[..4] == PCAPNG_MAGIC {
                let mut rest = [0u8; 8]; // byte-order magic, major and minor version
                if self.input.fill(&mut rest)? < 8 {
                    self.stats.truncated_at = Some(at);
                    return Ok(());
                }
                order = match rest[..4] {
                    [0x1a, 0x2b, 0x3c, 0x4d] => Order::Big,
                    [0x4d, 0x3c, 0x2b, 0x1a] => Order::Little,
                    _ => return Err(invalid(at + 8, "bad pcapng byte-order magic")),
                };
                let len = order.u32(&head, 4).unwrap_or(0);
                if len < 28 || !len.is_multiple_of(4) {
                    return Err(invalid(at, format!("bad section header length {len}")));
                }
                let major = order.u16(&rest, 4).unwrap_or(0);
                if major != 1 {
                    return Err(invalid(at, format!("unsupported pcapng version {major}")));
                }
                interfaces.clear();
                if !self.skip_rest(at, len, 16, order)? {
                    return Ok(());
                }
                continue;
            }
            let kind = order.u32(&head, 0).unwrap_or(0);
            let len = order.u32(&head, 4).unwrap_or(0);
            if len < 12 || !len.is_multiple_of(4) {
                return Err(invalid(at, format!("bad block length {len}")));
            }
            let is_packet = matches!(kind, 2 | 3 | 6);
            if kind != 1 && !is_packet {
                if !self.skip_rest(at, len, 8, order)? {
                    return Ok(());
                }
                continue;
            }
            if len as usize > MAX_BLOCK {
                return Err(invalid(
                    at,
                    format!("block of {len} bytes (limit {MAX_BLOCK})"),
                ));
            }
            // Body plus the trailing copy of the length.
            if !self.read_buf(len as usize - 8)? {
                if is_packet {
                    self.cut_packet(at);
                } else {
                    self.stats.truncated_at = Some(at);
                }
                return Ok(());
            }
            let body_len = self.buf.len() - 4;
            if order.u32(&self.buf, body_len) != Some(len) {
                return Err(invalid(at, "block lengths at its start and end differ"));
            }
            let body = &self.buf[..body_len];
            if kind == 1 {
                if interfaces.len() >= MAX_INTERFACES {
                    return Err(invalid(at, "too many interfaces in one section"));
                }
                interfaces.push(interface(order, body));
                continue;
            }
            self.stats.packets += 1;
            // (interface, timestamp, captured bytes)
            let packet = match kind {
                3 => {
                    let orig = order.u32(body, 0).unwrap_or(0) as usize;
                    let mut caplen = orig.min(body.len().saturating_sub(4));
                    if let Some(i) = interfaces.first().filter(|i| i.snaplen != 0) {
                        caplen = caplen.min(i.snaplen as usize);
                    }
                    Some((0, None, 4, caplen))
                }
                _ => {
                    let iface = if kind == 2 {
                        order.u16(body, 0).map(u32::from)
                    } else {
                        order.u32(body, 0)
                    };
                    let hi = order.u32(body, 4);
                    let lo = order.u32(body, 8);
                    let caplen = order.u32(body, 12);
                    match (iface, hi, lo, caplen) {
                        (Some(i), Some(hi), Some(lo), Some(c)) => {
                            let ts = (u64::from(hi) << 32) | u64::from(lo);
                            Some((i as usize, Some(ts), 20, c as usize))
                        }
                        _ => None,
                    }
                }
            };
            let Some((iface, ts, start, caplen)) = packet else {
                self.stats.skipped += 1;
                continue;
            };
            if caplen > MAX_RECORD {
                return Err(invalid(
                    at,
                    format!("packet claims {caplen} captured bytes (limit {MAX_RECORD})"),
                ));
            }
            let Some(frame) = body.get(start..start + caplen) else {
                return Err(invalid(at, "captured length overruns its block"));
            };
            let Some(interface) = interfaces.get(iface) else {
                self.stats.skipped += 1;
                continue;
            };
            if let Some(ts) = ts {
                last_ts_ms = interface.ts_ms(ts);
            }
            deliver(
                interface.link,
                last_ts_ms,
                frame,
                &mut self.stats,
                &mut *self.on_datagram,
            );
        }
    }

    /// Skips the rest of a block of `len` bytes of which `done` are read, checking its trailing
    /// length; `false` when the input ends first.
    fn skip_rest(&mut self, at: u64, len: u32, done: u32, order: Order) -> io::Result<bool> {
        let body = u64::from(len - done - 4);
        if self.input.skip(body)? < body {
            self.stats.truncated_at = Some(at);
            return Ok(false);
        }
        let mut trailer = [0u8; 4];
        if self.input.fill(&mut trailer)? < 4 {
            self.stats.truncated_at = Some(at);
            return Ok(false);
        }
        if order.u32(&trailer, 0) != Some(len) {
            return Err(invalid(at, "block lengths at its start and end differ"));
        }
        Ok(true)
    }
}

/// An Interface Description Block body: link type, snap length and the options we use.
fn interface(order: Order, body: &[u8]) -> Interface {
    let mut iface = Interface {
        link: u32::from(order.u16(body, 0).unwrap_or(u16::MAX)),
        snaplen: order.u32(body, 4).unwrap_or(0),
        units_per_sec: Some(1_000_000),
        offset_s: 0,
    };
    let mut pos = 8;
    while let (Some(code), Some(len)) = (order.u16(body, pos), order.u16(body, pos + 2)) {
        let len = usize::from(len);
        let Some(value) = body.get(pos + 4..pos + 4 + len) else {
            break;
        };
        match (code, value) {
            (0, _) => break,
            (9, [r, ..]) => {
                iface.units_per_sec = if r & 0x80 == 0 {
                    10u128.checked_pow(u32::from(*r))
                } else {
                    1u128.checked_shl(u32::from(r & 0x7f))
                };
            }
            (14, _) => iface.offset_s = order.i64(value, 0).unwrap_or(0),
            _ => {}
        }
        pos += 4 + len.next_multiple_of(4);
    }
    iface
}

/// Why a packet yielded no datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Not IP, unsupported link type, malformed, not UDP or cut short.
    Other,
    /// An IP fragment.
    Fragment,
}

/// Finds the UDP datagram in one captured frame and hands it on, counting it either way.
fn deliver(
    link: u32,
    ts_ms: i64,
    frame: &[u8],
    stats: &mut CaptureStats,
    on_datagram: &mut dyn FnMut(&Datagram<'_>),
) {
    match frame_udp(link, frame) {
        Ok((src, dst, payload)) => {
            stats.datagrams += 1;
            on_datagram(&Datagram {
                ts_ms,
                src,
                dst,
                payload,
            });
        }
        Err(skip) => {
            stats.skipped += 1;
            if skip == Skip::Fragment {
                stats.fragments += 1;
            }
        }
    }
}

fn frame_udp(link: u32, frame: &[u8]) -> Result<(SocketAddr, SocketAddr, &[u8]), Skip> {
    let packet = link_payload(link, frame).ok_or(Skip::Other)?;
    let ip = parse_ip(packet).ok_or(Skip::Other)?;
    if ip.proto != 17 {
        return Err(if ip.later_fragment {
            Skip::Fragment
        } else {
            Skip::Other
        });
    }
    if ip.later_fragment {
        return Err(Skip::Fragment);
    }
    let short = if ip.fragment {
        Skip::Fragment
    } else {
        Skip::Other
    };
    let sport = be16(ip.l4, 0).ok_or(short)?;
    let dport = be16(ip.l4, 2).ok_or(short)?;
    let len = usize::from(be16(ip.l4, 4).ok_or(short)?);
    if len < 8 {
        return Err(short);
    }
    let payload = ip.l4.get(8..len).ok_or(short)?;
    if ip.fragment && ip.l4_len != len {
        // A first fragment whose UDP length happens to fit is still only part of a datagram
        // unless the fragment holds exactly the datagram.
        return Err(Skip::Fragment);
    }
    Ok((
        SocketAddr::new(ip.src, sport),
        SocketAddr::new(ip.dst, dport),
        payload,
    ))
}

pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The IP packet in a frame of a link type, or `None` when the link type is unsupported or the
/// frame does not carry IPv4/IPv6.
fn link_payload(link: u32, frame: &[u8]) -> Option<&[u8]> {
    match link {
        // BSD loopback: the address family in the capturing host's byte order.
        0 => {
            let le = Order::Little.u32(frame, 0)?;
            let family = if le > 0xffff { le.swap_bytes() } else { le };
            is_inet_family(family).then(|| frame.get(4..))?
        }
        108 => is_inet_family(Order::Big.u32(frame, 0)?).then(|| frame.get(4..))?,
        1 => ethernet_payload(frame),
        113 => ethertype_payload(be16(frame, 14)?, frame.get(16..)?),
        276 => ethertype_payload(be16(frame, 0)?, frame.get(20..)?),
        101 | 228 | 229 => Some(frame),
        _ => None,
    }
}

/// AF_INET, and AF_INET6 as Linux, the BSDs and macOS number it.
fn is_inet_family(family: u32) -> bool {
    matches!(family, 2 | 10 | 24 | 28 | 30)
}

/// The IPv4/IPv6 packet in an Ethernet frame (after any VLAN tags), or `None`.
pub(crate) fn ethernet_payload(frame: &[u8]) -> Option<&[u8]> {
    ethertype_payload(be16(frame, 12)?, frame.get(14..)?)
}

fn ethertype_payload(mut ethertype: u16, mut rest: &[u8]) -> Option<&[u8]> {
    for _ in 0..8 {
        match ethertype {
            0x8100 | 0x88a8 | 0x9100 => {
                ethertype = be16(rest, 2)?;
                rest = rest.get(4..)?;
            }
            0x0800 | 0x86dd => return Some(rest),
            _ => return None,
        }
    }
    None
}

/// The parts of an IP header that capture and sFlow decoding use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Packet length from the header (IPv4 total length, IPv6 40 + payload length); 0 when the
    /// header does not say (IPv4 length 0 from segmentation offload, IPv6 jumbogram).
    pub total_len: u32,
    /// Any fragment (first or later).
    pub fragment: bool,
    /// A fragment other than the first: `l4` holds no transport header.
    pub later_fragment: bool,
    /// Transport header and data, as far as captured and as far as the IP length says.
    pub l4: &'a [u8],
    /// Transport bytes the IP length claims (may exceed `l4.len()` in a cut capture).
    pub l4_len: usize,
}

/// Parses an IPv4 or IPv6 header at the start of `packet` (chosen by the version nibble).
/// `None` for other versions and for headers cut short or inconsistent.
pub(crate) fn parse_ip(packet: &[u8]) -> Option<Ip<'_>> {
    match packet.first()? >> 4 {
        4 => parse_ipv4(packet),
        6 => parse_ipv6(packet),
        _ => None,
    }
}

fn parse_ipv4(p: &[u8]) -> Option<Ip<'_>> {
    let hlen = usize::from(p.first()? & 0x0f) * 4;
    if hlen < 20 || p.len() < hlen {
        return None;
    }
    let total = usize::from(be16(p, 2)?);
    let end = match total {
        0 => p.len(),
        t if t < hlen => return None,
        t => t,
    };
    let frag = be16(p, 6)?;
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    let addr = |at: usize| -> Option<IpAddr> {
        let a: [u8; 4] = p.get(at..at + 4)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    };
    Some(Ip {
        src: addr(12)?,
        dst: addr(16)?,
        proto: p[9],
        ttl: p[8],
        total_len: total as u32,
        fragment: more || offset != 0,
        later_fragment: offset != 0,
        l4: p.get(hlen..end.min(p.len()))?,
        l4_len: end - hlen,
    })
}

fn parse_ipv6(p: &[u8]) -> Option<Ip<'_>> {
    if p.len() < 40 {
        return None;
    }
    let payload = usize::from(be16(p, 4)?);
    let end = if payload == 0 { p.len() } else { 40 + payload };
    let data = p.get(..end.min(p.len()))?;
    let addr = |at: usize| -> Option<IpAddr> {
        let a: [u8; 16] = p.get(at..at + 16)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(a)))
    };
    let mut ip = Ip {
        src: addr(8)?,
        dst: addr(24)?,
        proto: p[6],
        ttl: p[7],
        total_len: if payload == 0 { 0 } else { end as u32 },
        fragment: false,
        later_fragment: false,
        l4: &[],
        l4_len: 0,
    };
    let mut pos = 40;
    for _ in 0..16 {
        let len = match ip.proto {
            // Hop-by-hop, routing, destination options, mobility: 8-octet units beyond the first.
            0 | 43 | 60 | 135 => (usize::from(*data.get(pos + 1)?) + 1) * 8,
            44 => {
                let frag = be16(data, pos + 2)?;
                ip.fragment = true;
                if frag & 0xfff8 != 0 {
                    ip.later_fragment = true;
                }
                8
            }
            // Authentication header: 4-octet units beyond the first two.
            51 => (usize::from(*data.get(pos + 1)?) + 2) * 4,
            _ => break,
        };
        let next = *data.get(pos)?;
        if pos + len > data.len() {
            return None;
        }
        ip.proto = next;
        pos += len;
        if ip.later_fragment {
            break;
        }
    }
    if matches!(ip.proto, 0 | 43 | 60 | 135 | 51) && !ip.later_fragment {
        return None; // more than 16 extension headers
    }
    ip.l4 = data.get(pos..)?;
    ip.l4_len = end.checked_sub(pos)?;
    Some(ip)
}
