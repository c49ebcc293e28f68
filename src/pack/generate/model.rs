//! The overhead model: how many bytes a flow record counts for a download.

use super::*;

/// How many bytes a flow record counts for a download of a file of a given size: the file
/// plus `overhead_pct` percent (an IP+TCP header per packet, TLS records) plus `fixed` bytes
/// (HTTP response header, TLS handshake, handshake and teardown packets), within
/// `tolerance_pct` percent plus `slack` bytes. The presets are measured (`docs/pack-gen.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    /// Per-size overhead, percent of the file size.
    pub overhead_pct: f64,
    /// Allowed deviation, percent of the file size.
    pub tolerance_pct: f64,
    /// Constant overhead, bytes.
    pub fixed: u64,
    /// Allowed deviation of the constant, bytes.
    pub slack: u64,
}

/// The network the downloads cross, for [`Model::preset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// IPv4, with or without TCP timestamps, MTU 1500: 2.6–4.2 % (headers per packet, TLS records).
    Ipv4,
    /// IPv6, with or without TCP timestamps, MTU 1500: 4.0–5.6 %.
    Ipv6,
    /// Either: 2.6–5.6 %.
    Any,
}

named_values!(Transport {
    Ipv4 = "ipv4": "downloads over IPv4",
    Ipv6 = "ipv6": "downloads over IPv6",
    Any = "any": "either",
});

/// The protocol the downloads use, for [`Model::preset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP: 200–900 bytes of response header and control packets.
    Http,
    /// HTTPS: 1.5–6.5 kB of TLS handshake (certificate chains differ), header and control.
    Https,
    /// Either: 200 bytes – 6.5 kB.
    Both,
}

named_values!(Scheme {
    Http = "http": "plain HTTP",
    Https = "https": "HTTPS",
    Both = "both": "either",
});

impl Model {
    /// The measured preset for a transport and scheme.
    pub fn preset(transport: Transport, scheme: Scheme) -> Model {
        // Ranges of the relative and the constant overhead; the model is their midpoint ± half.
        let (lo, hi) = match transport {
            Transport::Ipv4 => (2.6, 4.2),
            Transport::Ipv6 => (4.0, 5.6),
            Transport::Any => (2.6, 5.6),
        };
        let (flo, fhi) = match scheme {
            Scheme::Http => (200, 900),
            Scheme::Https => (1_500, 6_500),
            Scheme::Both => (200, 6_500),
        };
        Model {
            overhead_pct: (lo + hi) / 2.0,
            tolerance_pct: (hi - lo) / 2.0,
            fixed: (flo + fhi) / 2,
            slack: (fhi - flo) / 2,
        }
    }

    /// The expected byte count of a download of `size` bytes and its allowed deviation.
    pub fn window(&self, size: u64) -> (u64, u64) {
        let s = size as f64;
        let center = s * (1.0 + self.overhead_pct / 100.0) + self.fixed as f64;
        let tol = s * self.tolerance_pct / 100.0 + self.slack as f64;
        (center.round() as u64, tol.round() as u64)
    }

    pub(super) fn check(&self) -> Result<(), GenError> {
        let pct = |x: f64| x.is_finite() && (0.0..50.0).contains(&x);
        if pct(self.overhead_pct) && pct(self.tolerance_pct) {
            Ok(())
        } else {
            Err(GenError::Option(
                "overhead and tolerance are percentages from 0 to 50".into(),
            ))
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Model::preset(Transport::Ipv4, Scheme::Both)
    }
}
