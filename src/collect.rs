//! The UDP collector: receives NetFlow/IPFIX/sFlow datagrams on one or more sockets and hands
//! decoded flows to the caller through a bounded queue.
//!
//! One thread per socket receives into owned buffers and pushes them onto a bounded queue; the
//! caller's thread decodes and consumes. When the consumer falls behind, datagrams are dropped
//! at the queue and counted — never silently lost, never unbounded memory. Receive buffers are
//! requested large and the size the kernel granted is reported.

use crate::flow::Flow;
use crate::flow::ingest::binary::decode_datagram;
use crate::flow::netflow::{Decoder, DecoderConfig, ExporterStats, StateStats};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

/// Settings of a [`Collector`].
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Requested socket receive buffer, bytes.
    pub recv_buffer: usize,
    /// Datagrams the queue between receivers and the decoder holds.
    pub queue: usize,
    /// The decoder's template timeout and caps.
    pub decoder: DecoderConfig,
    /// Exporters counted under their own address in [`CollectorStats::exporters`] (the first
    /// ones seen); the others are added up in [`CollectorStats::other_exporters`].
    pub max_exporter_series: usize,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: Vec::new(),
            recv_buffer: 32 << 20,
            queue: 65_536,
            decoder: DecoderConfig::collector(),
            max_exporter_series: 1024,
        }
    }
}

/// Exporters whose last warning time is remembered for the once-a-minute log; beyond, the
/// others share one.
const MAX_WARNED_EXPORTERS: usize = 4096;

/// One bound socket and what the kernel granted it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listener {
    /// The bound address.
    pub addr: SocketAddr,
    /// Receive buffer requested, bytes.
    pub requested: usize,
    /// Receive buffer granted, bytes (as reported by the kernel).
    pub granted: usize,
}

/// Counters of a collector run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CollectorStats {
    /// Datagrams received on all sockets.
    pub received: u64,
    /// Datagrams dropped because the queue was full.
    pub queue_drops: u64,
    /// Datagrams that were not flow exports.
    pub not_flow: u64,
    /// Flows handed to the consumer.
    pub flows: u64,
    /// Per exporter, the decoder's counters since the start, for the first
    /// `max_exporter_series` exporters seen (kept even when the decoder evicts their state).
    pub exporters: HashMap<IpAddr, ExporterStats>,
    /// The counters of the exporters beyond `max_exporter_series`, added up.
    pub other_exporters: ExporterStats,
    /// The decoder's state: sizes, evictions.
    pub state: StateStats,
}

struct Packet {
    from: SocketAddr,
    at_ms: i64,
    data: Vec<u8>,
}

/// A running collector: receiver threads are started by [`Collector::bind`].
pub struct Collector {
    listeners: Vec<Listener>,
    rx: Receiver<Packet>,
    received: Arc<AtomicU64>,
    drops: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    decoder: Decoder,
    not_flow: u64,
    flows: u64,
    last_warning: HashMap<IpAddr, Instant>,
    /// When the exporters beyond [`MAX_WARNED_EXPORTERS`] were last warned about.
    last_other_warning: Option<Instant>,
    series: HashMap<IpAddr, ExporterStats>,
    other: ExporterStats,
    max_series: usize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn bind_socket(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<(UdpSocket, usize)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel may grant less than asked (net.core.rmem_max); what it granted is reported.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.bind(&addr.into())?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok((socket, granted))
}

fn receive(
    socket: UdpSocket,
    tx: SyncSender<Packet>,
    received: Arc<AtomicU64>,
    drops: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                received.fetch_add(1, Ordering::Relaxed);
                let packet = Packet {
                    from,
                    at_ms: now_ms(),
                    data: buf[..n].to_vec(),
                };
                match tx.try_send(packet) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        drops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

impl Collector {
    /// Binds every listen address and starts one receiver thread per socket.
    pub fn bind(config: &CollectorConfig) -> std::io::Result<Collector> {
        let (tx, rx) = sync_channel(config.queue.max(1));
        let received = Arc::new(AtomicU64::new(0));
        let drops = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut listeners = Vec::new();
        let mut threads = Vec::new();
        for &addr in &config.listen {
            let (socket, granted) = bind_socket(addr, config.recv_buffer).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            listeners.push(Listener {
                addr: socket.local_addr()?,
                requested: config.recv_buffer,
                granted,
            });
            let (tx, received, drops, stop) =
                (tx.clone(), received.clone(), drops.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("recv {addr}"))
                    .spawn(move || receive(socket, tx, received, drops, stop))?,
            );
        }
        Ok(Collector {
            listeners,
            rx,
            received,
            drops,
            stop,
            threads,
            decoder: Decoder::with_config(config.decoder.clone()),
            not_flow: 0,
            flows: 0,
            last_warning: HashMap::new(),
            last_other_warning: None,
            series: HashMap::new(),
            other: ExporterStats::default(),
            max_series: config.max_exporter_series,
        })
    }

    /// The bound sockets (with the ports the kernel chose for port 0).
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// A flag that stops the collector when set (e.g. from a signal handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Decodes datagrams until the stop flag is set or `deadline` passes, passing flows to
    /// `on_flow`. Malformed datagrams are logged at most once per exporter per minute through
    /// `on_warning`, and always counted.
    pub fn run(
        &mut self,
        deadline: Option<Instant>,
        on_flow: &mut dyn FnMut(Flow),
        on_warning: &mut dyn FnMut(String),
    ) {
        loop {
            if self.stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(p) => self.handle(p, on_flow, on_warning),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Stopping: drain what was already queued. Not at the deadline: under a sustained
        // flood the queue never empties, and the caller would never get control back (nor
        // refresh its counters).
        if self.stop.load(Ordering::Relaxed) {
            while let Ok(p) = self.rx.try_recv() {
                self.handle(p, on_flow, on_warning);
            }
        }
    }

    fn handle(
        &mut self,
        p: Packet,
        on_flow: &mut dyn FnMut(Flow),
        on_warning: &mut dyn FnMut(String),
    ) {
        let exporter = p.from.ip();
        let before = self.decoder.exporter_stats(&exporter).cloned();
        let mut n = 0;
        let result = decode_datagram(&mut self.decoder, exporter, &p.data, p.at_ms, &mut |f| {
            n += 1;
            on_flow(f)
        });
        self.flows += n;
        if Decoder::is_netflow(&p.data) {
            self.count(exporter, before);
        }
        match result {
            Ok(true) => {}
            Ok(false) => self.not_flow += 1,
            Err(reason) => {
                let now = Instant::now();
                if self.warning_due(exporter, now) {
                    on_warning(format!(
                        "malformed datagram from {}: {reason} (further ones from this exporter are only counted for a minute)",
                        p.from
                    ));
                }
            }
        }
    }

    /// Adds what one datagram changed in the decoder's counters (of `exporter`, and of the
    /// exporters whose sessions it evicted) to their series, or to the other exporters' when
    /// there are `max_exporter_series` already.
    fn count(&mut self, exporter: IpAddr, before: Option<ExporterStats>) {
        let Some(after) = self.decoder.exporter_stats(&exporter) else {
            return;
        };
        let delta = after.since(&before.unwrap_or_default());
        self.add_to_series(exporter, &delta);
        // Sessions of other exporters this datagram evicted.
        for i in 0..self.decoder.counted_elsewhere().len() {
            let (ip, d) = self.decoder.counted_elsewhere()[i].clone();
            self.add_to_series(ip, &d);
        }
    }

    fn add_to_series(&mut self, exporter: IpAddr, delta: &ExporterStats) {
        if let Some(s) = self.series.get_mut(&exporter) {
            s.add(delta);
        } else if self.series.len() < self.max_series {
            self.series.insert(exporter, delta.clone());
        } else {
            self.other.add(delta);
        }
    }

    /// Whether a malformed datagram from `exporter` is logged: once a minute per exporter, and
    /// once a minute for all exporters beyond [`MAX_WARNED_EXPORTERS`].
    fn warning_due(&mut self, exporter: IpAddr, now: Instant) -> bool {
        let minute = Duration::from_secs(60);
        if let Some(t) = self.last_warning.get_mut(&exporter) {
            if now.duration_since(*t) < minute {
                return false;
            }
            *t = now;
            return true;
        }
        if self.last_warning.len() >= MAX_WARNED_EXPORTERS {
            self.last_warning
                .retain(|_, t| now.duration_since(*t) < minute);
        }
        if self.last_warning.len() < MAX_WARNED_EXPORTERS {
            self.last_warning.insert(exporter, now);
            return true;
        }
        if self
            .last_other_warning
            .is_some_and(|t| now.duration_since(t) < minute)
        {
            return false;
        }
        self.last_other_warning = Some(now);
        true
    }

    /// Counters so far.
    pub fn stats(&self) -> CollectorStats {
        CollectorStats {
            received: self.received.load(Ordering::Relaxed),
            queue_drops: self.drops.load(Ordering::Relaxed),
            not_flow: self.not_flow,
            flows: self.flows,
            exporters: self.series.clone(),
            other_exporters: self.other.clone(),
            state: self.decoder.state_stats(),
        }
    }

    /// Stops the receiver threads, decodes what they still queued, and returns the final
    /// counters.
    pub fn shutdown(
        mut self,
        on_flow: &mut dyn FnMut(Flow),
        on_warning: &mut dyn FnMut(String),
    ) -> CollectorStats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        while let Ok(p) = self.rx.try_recv() {
            self.handle(p, on_flow, on_warning);
        }
        self.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporters_beyond_the_series_cap_are_added_up_as_other() {
        let mut c = Collector::bind(&CollectorConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            max_exporter_series: 2,
            ..CollectorConfig::default()
        })
        .unwrap();
        let to = c.listeners()[0].addr;
        // A NetFlow v5 header with no records: malformed, counted per exporter.
        let d = [0u8, 5, 0, 0];
        for x in 2..7 {
            let s = UdpSocket::bind(format!("127.0.0.{x}:0")).unwrap();
            s.send_to(&d, to).unwrap();
            s.send_to(&d, to).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = |s: &CollectorStats| {
            s.exporters.values().map(|e| e.datagrams).sum::<u64>() + s.other_exporters.datagrams
        };
        while seen(&c.stats()) < 10 && Instant::now() < deadline {
            c.run(
                Some(Instant::now() + Duration::from_millis(50)),
                &mut |_| {},
                &mut |_| {},
            );
        }
        let s = c.stats();
        assert_eq!(s.exporters.len(), 2, "{s:?}");
        assert!(
            s.exporters
                .values()
                .all(|e| e.datagrams == 2 && e.malformed == 2)
        );
        assert_eq!(s.other_exporters.datagrams, 6, "{s:?}");
        assert_eq!(s.other_exporters.malformed, 6);
        assert_eq!(s.state.exporters, 5);
    }
}
