//! The typed field schema: every field a rule may name, resolved once at compile time to a slot
//! the evaluator reads directly (no string look-ups per flow).

use crate::flow::Flow;
use std::net::IpAddr;

/// Which endpoint of a flow a field speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The local endpoint being fingerprinted.
    Host,
    /// The other endpoint.
    Peer,
}

/// Numeric fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumField {
    /// `host.port` / `peer.port`
    Port(Side),
    /// `proto`
    Proto,
    /// `bytes`: both directions.
    Bytes,
    /// `packets`: both directions.
    Packets,
    /// `host.bytes` / `peer.bytes`: bytes sent by that side.
    SideBytes(Side),
    /// `host.packets` / `peer.packets`: packets sent by that side.
    SidePackets(Side),
    /// `duration` in milliseconds.
    Duration,
    /// `host.ttl` / `peer.ttl`: minimum TTL of packets sent by that side, when exported.
    Ttl(Side),
    /// `ip.version`: 4 or 6.
    IpVersion,
}

/// Number of distinct [`NumField`] slots (for per-field index arrays).
pub const NUM_SLOTS: usize = 14;

impl NumField {
    /// A dense index in `0..NUM_SLOTS`.
    pub fn slot(self) -> usize {
        let side = |s: Side| usize::from(s == Side::Peer);
        match self {
            NumField::Port(s) => side(s),
            NumField::Proto => 2,
            NumField::Bytes => 3,
            NumField::Packets => 4,
            NumField::SideBytes(s) => 5 + side(s),
            NumField::SidePackets(s) => 7 + side(s),
            NumField::Duration => 9,
            NumField::Ttl(s) => 10 + side(s),
            NumField::IpVersion => 12,
        }
    }

    /// How literals compared with this field are read.
    pub fn unit(self) -> NumUnit {
        match self {
            NumField::Port(_) => NumUnit::Port,
            NumField::Proto => NumUnit::Proto,
            NumField::Bytes | NumField::SideBytes(_) => NumUnit::Bytes,
            NumField::Packets | NumField::SidePackets(_) => NumUnit::Count,
            NumField::Duration => NumUnit::Duration,
            NumField::Ttl(_) => NumUnit::Ttl,
            NumField::IpVersion => NumUnit::Count,
        }
    }
}

/// The unit family of a numeric field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumUnit {
    /// 0..=65535, no unit.
    Port,
    /// 0..=255 or a protocol name.
    Proto,
    /// Sizes: `B`, `KB`, `KiB`, `MB`, `MiB`, ...
    Bytes,
    /// Plain counts.
    Count,
    /// `ms`, `s`, `m`, `h`, `d`; stored in milliseconds.
    Duration,
    /// 0..=255.
    Ttl,
}

/// What a field name resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// An address.
    Addr(Side),
    /// A number.
    Num(NumField),
    /// A host name carried by the record (or, later, resolved).
    Domain(Side),
    /// TCP flags.
    Flags,
}

/// Every field name, as written in rules.
pub const FIELDS: &[(&str, Field)] = &[
    ("host.addr", Field::Addr(Side::Host)),
    ("host.ip", Field::Addr(Side::Host)),
    ("peer.addr", Field::Addr(Side::Peer)),
    ("peer.ip", Field::Addr(Side::Peer)),
    ("host.port", Field::Num(NumField::Port(Side::Host))),
    ("peer.port", Field::Num(NumField::Port(Side::Peer))),
    ("proto", Field::Num(NumField::Proto)),
    ("bytes", Field::Num(NumField::Bytes)),
    ("packets", Field::Num(NumField::Packets)),
    ("host.bytes", Field::Num(NumField::SideBytes(Side::Host))),
    ("peer.bytes", Field::Num(NumField::SideBytes(Side::Peer))),
    (
        "host.packets",
        Field::Num(NumField::SidePackets(Side::Host)),
    ),
    (
        "peer.packets",
        Field::Num(NumField::SidePackets(Side::Peer)),
    ),
    ("duration", Field::Num(NumField::Duration)),
    ("host.ttl", Field::Num(NumField::Ttl(Side::Host))),
    ("peer.ttl", Field::Num(NumField::Ttl(Side::Peer))),
    ("ip.version", Field::Num(NumField::IpVersion)),
    ("tcp.flags", Field::Flags),
    ("host.domain", Field::Domain(Side::Host)),
    ("peer.domain", Field::Domain(Side::Peer)),
];

/// Resolves a field name.
pub fn field(name: &str) -> Option<Field> {
    FIELDS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}

/// Maps an address into one 128-bit key space (IPv4 as IPv4-mapped IPv6).
#[inline]
pub fn addr_key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => 0xffff_0000_0000 | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A flow seen from one local endpoint: `host` is `src` when `host_is_src`.
#[derive(Debug, Clone, Copy)]
pub struct View<'f> {
    /// The record.
    pub flow: &'f Flow,
    /// Whether the host is the record's source.
    pub host_is_src: bool,
    /// Names the peer's address answered for at the time of the flow (passive DNS), besides any
    /// name the record carries.
    pub peer_names: &'f [std::sync::Arc<str>],
}

impl<'f> View<'f> {
    #[inline]
    fn is_src(&self, side: Side) -> bool {
        (side == Side::Host) == self.host_is_src
    }

    /// The address of `side`.
    #[inline]
    pub fn addr(&self, side: Side) -> IpAddr {
        if self.is_src(side) {
            self.flow.src
        } else {
            self.flow.dst
        }
    }

    /// The value of a numeric field, `None` when the record does not carry it.
    #[inline]
    pub fn num(&self, field: NumField) -> Option<u64> {
        let f = self.flow;
        Some(match field {
            NumField::Port(s) => u64::from(if self.is_src(s) {
                f.src_port
            } else {
                f.dst_port
            }),
            NumField::Proto => u64::from(f.proto),
            NumField::Bytes => f.bytes + f.rev_bytes,
            NumField::Packets => f.packets + f.rev_packets,
            NumField::SideBytes(s) => {
                if self.is_src(s) {
                    f.bytes
                } else {
                    f.rev_bytes
                }
            }
            NumField::SidePackets(s) => {
                if self.is_src(s) {
                    f.packets
                } else {
                    f.rev_packets
                }
            }
            NumField::Duration => f.duration_ms(),
            NumField::Ttl(s) => u64::from(if self.is_src(s) {
                f.src_ttl?
            } else {
                f.dst_ttl?
            }),
            NumField::IpVersion => {
                if f.src.is_ipv4() {
                    4
                } else {
                    6
                }
            }
        })
    }

    /// Every name of `side`: the record's own, then (for the peer) those learned from DNS.
    #[inline]
    pub fn names(&self, side: Side) -> impl Iterator<Item = &'f str> + use<'f> {
        let learned: &'f [std::sync::Arc<str>] = if side == Side::Peer {
            self.peer_names
        } else {
            &[]
        };
        self.name(side)
            .into_iter()
            .chain(learned.iter().map(|n| &**n))
    }

    /// The host name of `side`, when the record carries one.
    #[inline]
    pub fn name(&self, side: Side) -> Option<&'f str> {
        if self.is_src(side) {
            self.flow.src_name.as_deref()
        } else {
            self.flow.dst_name.as_deref()
        }
    }
}
