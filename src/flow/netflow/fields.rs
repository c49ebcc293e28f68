//! Information elements flowprint keeps, and how a template is compiled into a flat plan.

/// Private enterprise number of RFC 5103 reverse elements.
pub const REVERSE_PEN: u32 = 29305;

/// Where a field's value goes. Variants are named after the flow field or element they carry.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Not kept.
    Skip,
    Bytes,
    Packets,
    RevBytes,
    RevPackets,
    Proto,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcV4,
    DstV4,
    SrcV6,
    DstV6,
    /// ICMP type*256+code.
    IcmpTypeCode,
    /// ICMP type alone (v9 field 176/178) and code alone (177/179).
    IcmpType,
    IcmpCode,
    /// sysUpTime-relative milliseconds (v9 21/22, IPFIX flowStart/EndSysUpTime).
    StartUptime,
    EndUptime,
    StartSecs,
    EndSecs,
    StartMillis,
    EndMillis,
    StartMicros,
    EndMicros,
    /// NTP 64-bit timestamps (IPFIX 154/155 are µs as NTP, 156/157 ns as NTP).
    StartNtp,
    EndNtp,
    /// Microseconds before the export time (IPFIX 158/159).
    StartDeltaMicros,
    EndDeltaMicros,
    /// `systemInitTimeMilliseconds` (160): the exporter's boot time.
    SystemInit,
    MinTtl,
    MaxTtl,
    RevMinTtl,
    /// `ipTTL` (192).
    Ttl,
    RevTtl,
    ExporterV4,
    ExporterV6,
    /// Sampling interval (v9 34, IPFIX 34/305, v9 50 random interval).
    Sampling,
    /// A host name for the destination (TLS SNI, HTTP Host, QUIC SNI).
    DstName,
    /// A DNS query name.
    DnsName,
}

/// The target of an IANA element (enterprise 0) in NetFlow v9 or IPFIX.
pub fn iana_target(id: u16, ipfix: bool) -> Target {
    use Target::*;
    match id {
        1 | 85 => Bytes,
        2 | 86 => Packets,
        4 => Proto,
        6 => TcpFlags,
        7 => SrcPort,
        8 => SrcV4,
        11 => DstPort,
        12 => DstV4,
        21 => EndUptime,
        22 => StartUptime,
        // v9 OUT_BYTES / OUT_PKTS: the reverse direction of bidirectional exporters.
        23 => RevBytes,
        24 => RevPackets,
        27 => SrcV6,
        28 => DstV6,
        32 | 139 => IcmpTypeCode,
        34 | 305 => Sampling,
        50 if !ipfix => Sampling,
        52 => MinTtl,
        53 => MaxTtl,
        130 => ExporterV4,
        131 => ExporterV6,
        150 => StartSecs,
        151 => EndSecs,
        152 => StartMillis,
        153 => EndMillis,
        154 | 156 => StartNtp,
        155 | 157 => EndNtp,
        158 => StartDeltaMicros,
        159 => EndDeltaMicros,
        160 => SystemInit,
        176 | 178 => IcmpType,
        177 | 179 => IcmpCode,
        192 => Ttl,
        // Cisco NSEL (ASA): initiator/responder octets and packets.
        231 => Bytes,
        232 => RevBytes,
        298 => Packets,
        299 => RevPackets,
        _ => Skip,
    }
}

/// The target of an enterprise element (IPFIX only).
pub fn enterprise_target(pen: u32, id: u16) -> Target {
    use Target::*;
    match (pen, id) {
        (REVERSE_PEN, 1 | 85 | 231) => RevBytes,
        (REVERSE_PEN, 2 | 86 | 298) => RevPackets,
        (REVERSE_PEN, 52) => RevMinTtl,
        (REVERSE_PEN, 192) => RevTtl,
        // CESNET ipfixprobe: TLS SNI, DNS name, QUIC SNI; Flowmon: HTTP host.
        (8057, 808) | (8057, 890) | (39499, 1) => DstName,
        (8057, 2) => DnsName,
        _ => Skip,
    }
}

/// One step of a decoding plan.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Where the value goes.
    pub target: Target,
    /// Field length in bytes, or `VARLEN` for IPFIX variable-length fields.
    pub len: u16,
}

/// IPFIX's marker for a variable-length field.
pub const VARLEN: u16 = 65535;

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Steps in record order; consecutive skipped fixed fields are merged.
    pub steps: Vec<Step>,
    /// Record length when no field is variable-length.
    pub fixed_len: Option<usize>,
    /// Minimum record length (variable fields count as 1 byte).
    pub min_len: usize,
    /// Whether this is an options template (its records configure the session).
    pub options: bool,
    /// Number of scope fields (options templates).
    pub scope_fields: u16,
    /// Elements of enterprises flowprint does not know, skipped.
    pub unknown_enterprise: u16,
}

impl Plan {
    /// Compiles `(target, len)` fields into a plan.
    pub fn new(
        fields: &[(Target, u16)],
        options: bool,
        scope_fields: u16,
        unknown_enterprise: u16,
    ) -> Plan {
        let mut steps: Vec<Step> = Vec::with_capacity(fields.len());
        let mut variable = false;
        let mut min_len = 0usize;
        for &(target, len) in fields {
            if len == VARLEN {
                variable = true;
                min_len += 1;
            } else {
                min_len += usize::from(len);
            }
            if let (Target::Skip, Some(last)) = (target, steps.last_mut())
                && last.target == Target::Skip
                && last.len != VARLEN
                && len != VARLEN
                && u32::from(last.len) + u32::from(len) < u32::from(VARLEN)
            {
                last.len += len;
                continue;
            }
            steps.push(Step { target, len });
        }
        Plan {
            steps,
            fixed_len: (!variable).then_some(min_len),
            min_len,
            options,
            scope_fields,
            unknown_enterprise,
        }
    }
}
