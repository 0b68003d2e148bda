//! QUIC transport tuning for long fat pipes.
//!
//! What we know from measurement (issue 4): quinn's default windows (1.25 MB per stream,
//! 10 MB send window) cap one stream near 100 Mbit/s at 100 ms RTT, so the windows follow the
//! bandwidth-delay product of the path; several streams of one connection share one
//! congestion window, so under random loss one Cubic connection collapses (about 6 Mbit/s at
//! 100 ms and 0.1 % loss) while BBR, or several connections, hold up. Hence BBR by default,
//! windows at twice the BDP from the link table ([`TransportSettings::for_link`]), and more
//! connections per peer when an operator picks a loss-based controller on a long path.
//! Every figure here is a `[transfer]` config field, so the WAN benchmark can change them
//! without a rebuild.

use super::file::{DEFAULT_LINK, Link};
use quinn::VarInt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Smallest stream or connection window `for_link` sets: quinn's own stream default is
/// 1.25 MB; below a few MB a single chunk no longer fits in flight on a fast LAN.
pub const MIN_WINDOW_BYTES: u64 = 4 << 20;
/// Largest window `for_link` sets: 512 MiB covers 2x the BDP of 20 Gbit/s at 100 ms,
/// and bounds what one peer can make us buffer.
pub const MAX_WINDOW_BYTES: u64 = 512 << 20;
/// Largest window the config accepts at all (4 GiB), to catch a unit mistake.
pub const CONFIG_MAX_WINDOW_BYTES: u64 = 4 << 30;
/// RTT per additional connection for loss-based controllers in `for_link`: Cubic's recovery
/// after a loss grows with RTT, so a long path gets one connection per 25 ms, at most
/// [`MAX_CONNECTIONS_PER_PEER_AUTO`].
const RTT_MS_PER_LOSS_BASED_CONNECTION: f64 = 25.0;
/// Cap on the connections `for_link` opens to one peer.
pub const MAX_CONNECTIONS_PER_PEER_AUTO: u32 = 8;

/// The congestion controller of every QUIC connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CongestionController {
    /// Model-based (bottleneck bandwidth and RTT): holds its rate under random loss, which
    /// is why it is the default on long paths.
    Bbr,
    /// Loss-based, Linux's default: halves on each loss, slow to recover at high RTT.
    Cubic,
    /// Loss-based, the RFC 9002 baseline.
    Newreno,
}

impl std::fmt::Display for CongestionController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bbr => "bbr",
            Self::Cubic => "cubic",
            Self::Newreno => "newreno",
        })
    }
}

/// The `[transfer]` section: QUIC transport settings. Defaults suit [`DEFAULT_LINK`]
/// (1 Gbit/s at 100 ms); with `size_windows_from_links` the windows of each connection follow
/// the link table instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSettings {
    /// `bbr`, `cubic` or `newreno`.
    pub congestion_controller: CongestionController,
    /// Bytes a peer may send on one stream beyond what we have read: 2x BDP, so that one
    /// stream alone can fill the path.
    pub stream_receive_window_bytes: u64,
    /// Bytes a peer may send on the whole connection beyond what we have read: 2x BDP.
    pub receive_window_bytes: u64,
    /// Bytes we keep in flight, unacknowledged, on one connection: 2x BDP.
    pub send_window_bytes: u64,
    /// Streams a peer may open towards us at once, each way.
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams a peer may open towards us at once.
    pub max_concurrent_uni_streams: u32,
    /// Milliseconds between keep-alive packets on an idle connection; 0 sends none.
    pub keep_alive_interval_ms: u64,
    /// A connection silent for this long, in milliseconds, is closed.
    pub idle_timeout_ms: u64,
    /// RTT assumed before the first measurement, milliseconds.
    pub initial_rtt_ms: u64,
    /// QUIC connections opened to one peer; streams are spread over them.
    pub connections_per_peer: u32,
    /// Size windows (and, for loss-based controllers, connections) per peer from the
    /// federation file's link table.
    pub size_windows_from_links: bool,
    /// Send batches of packets in one system call (UDP GSO) where the kernel supports it;
    /// quinn turns it off by itself on a NIC that refuses it.
    pub segmentation_offload: bool,
    /// Data streams a sender opens per transfer: chunks are read from the store and
    /// written concurrently on each.
    pub streams_per_transfer: u32,
    /// Transfers this site opens that run at once; more wait, highest priority first.
    pub max_active_transfers: u32,
}

impl Default for TransportSettings {
    fn default() -> Self {
        let base = Self {
            congestion_controller: CongestionController::Bbr,
            stream_receive_window_bytes: 0,
            receive_window_bytes: 0,
            send_window_bytes: 0,
            // Enough streams to keep 2x BDP in flight with ~1 MiB chunks on the default link,
            // and then some; a stream costs a few hundred bytes of state.
            max_concurrent_bidi_streams: 256,
            max_concurrent_uni_streams: 256,
            // Well inside the idle timeout and typical NAT/firewall UDP timeouts (30 s).
            keep_alive_interval_ms: 10_000,
            // Long enough for a receiver to commit a large object between frames.
            idle_timeout_ms: 60_000,
            initial_rtt_ms: DEFAULT_LINK.rtt_ms as u64,
            // BBR holds up under loss on one connection; see the module doc.
            connections_per_peer: 1,
            size_windows_from_links: true,
            segmentation_offload: true,
            streams_per_transfer: 8,
            max_active_transfers: 4,
        };
        base.for_link(DEFAULT_LINK)
    }
}

/// Bytes in flight to fill `link`: bandwidth x RTT.
pub fn bandwidth_delay_product_bytes(link: Link) -> u64 {
    (link.bandwidth_mbps as f64 * 1e6 / 8.0 * link.rtt_ms / 1e3) as u64
}

impl TransportSettings {
    /// These settings with windows sized for `link`: 2x its bandwidth-delay product (room
    /// for the congestion controller to probe above the BDP and for a receiver that reads in
    /// bursts), within [`MIN_WINDOW_BYTES`]..=[`MAX_WINDOW_BYTES`]; the initial RTT set to
    /// the link's; and for a loss-based controller, one connection per 25 ms of RTT (at least
    /// the configured number, at most 8).
    pub fn for_link(&self, link: Link) -> Self {
        let window = (2 * bandwidth_delay_product_bytes(link)).clamp(MIN_WINDOW_BYTES, MAX_WINDOW_BYTES);
        let connections_per_peer = match self.congestion_controller {
            CongestionController::Bbr => self.connections_per_peer,
            CongestionController::Cubic | CongestionController::Newreno => {
                let by_rtt = (link.rtt_ms / RTT_MS_PER_LOSS_BASED_CONNECTION).ceil() as u32;
                self.connections_per_peer.max(by_rtt.min(MAX_CONNECTIONS_PER_PEER_AUTO))
            }
        };
        Self {
            stream_receive_window_bytes: window,
            receive_window_bytes: window,
            send_window_bytes: window,
            initial_rtt_ms: (link.rtt_ms.ceil() as u64).max(1),
            connections_per_peer,
            ..self.clone()
        }
    }

    /// Checks every value; the message names the `[transfer]` field and its bounds.
    pub fn validate(&self) -> Result<(), String> {
        let windows = [
            ("stream_receive_window_bytes", self.stream_receive_window_bytes),
            ("receive_window_bytes", self.receive_window_bytes),
            ("send_window_bytes", self.send_window_bytes),
        ];
        for (field, value) in windows {
            if !(64 << 10..=CONFIG_MAX_WINDOW_BYTES).contains(&value) {
                return Err(format!(
                    "[transfer] {field} = {value} must be between 65536 and {CONFIG_MAX_WINDOW_BYTES}"
                ));
            }
        }
        for (field, value) in [
            ("max_concurrent_bidi_streams", self.max_concurrent_bidi_streams),
            ("max_concurrent_uni_streams", self.max_concurrent_uni_streams),
        ] {
            if !(1..=65_536).contains(&value) {
                return Err(format!("[transfer] {field} = {value} must be between 1 and 65536"));
            }
        }
        if !(1_000..=3_600_000).contains(&self.idle_timeout_ms) {
            return Err(format!(
                "[transfer] idle_timeout_ms = {} must be between 1000 and 3600000",
                self.idle_timeout_ms
            ));
        }
        if self.keep_alive_interval_ms >= self.idle_timeout_ms {
            return Err(format!(
                "[transfer] keep_alive_interval_ms = {} must be below idle_timeout_ms = {} (0 turns keep-alives off)",
                self.keep_alive_interval_ms, self.idle_timeout_ms
            ));
        }
        for (field, value, max) in [
            ("streams_per_transfer", self.streams_per_transfer, 256),
            ("max_active_transfers", self.max_active_transfers, 1024),
        ] {
            if !(1..=max).contains(&value) {
                return Err(format!("[transfer] {field} = {value} must be between 1 and {max}"));
            }
        }
        if !(1..=10_000).contains(&self.initial_rtt_ms) {
            return Err(format!("[transfer] initial_rtt_ms = {} must be between 1 and 10000", self.initial_rtt_ms));
        }
        if !(1..=64).contains(&self.connections_per_peer) {
            return Err(format!(
                "[transfer] connections_per_peer = {} must be between 1 and 64",
                self.connections_per_peer
            ));
        }
        Ok(())
    }

    /// Applies the flow-control settings that quinn can change on a live connection (the
    /// connection receive window, send window and stream limits; the per-stream window is
    /// fixed at the handshake). The server side uses this once it knows which peer it
    /// talks to, since its endpoint-wide config cannot.
    pub fn apply_to_connection(&self, connection: &quinn::Connection) {
        connection.set_receive_window(varint(self.receive_window_bytes));
        connection.set_send_window(self.send_window_bytes);
        connection.set_max_concurrent_bi_streams(varint(self.max_concurrent_bidi_streams.into()));
        connection.set_max_concurrent_uni_streams(varint(self.max_concurrent_uni_streams.into()));
    }
}

fn varint(value: u64) -> VarInt {
    VarInt::from_u64(value).unwrap_or(VarInt::MAX)
}

/// The quinn transport config for these settings (assumed validated).
pub fn transport_config(settings: &TransportSettings) -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config
        .stream_receive_window(varint(settings.stream_receive_window_bytes))
        .receive_window(varint(settings.receive_window_bytes))
        .send_window(settings.send_window_bytes)
        .max_concurrent_bidi_streams(varint(settings.max_concurrent_bidi_streams.into()))
        .max_concurrent_uni_streams(varint(settings.max_concurrent_uni_streams.into()))
        .keep_alive_interval(
            (settings.keep_alive_interval_ms > 0).then(|| Duration::from_millis(settings.keep_alive_interval_ms)),
        )
        .max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_millis(settings.idle_timeout_ms)).ok())
        .initial_rtt(Duration::from_millis(settings.initial_rtt_ms))
        .enable_segmentation_offload(settings.segmentation_offload);
    match settings.congestion_controller {
        CongestionController::Bbr => {
            config.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
        }
        CongestionController::Cubic => {
            config.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()));
        }
        CongestionController::Newreno => {
            config.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()));
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_bandwidth_delay_product() {
        let base = TransportSettings::default();
        // 10 Gbit/s at 100 ms: BDP 125 MB, 2x = 250 MB.
        let fat = base.for_link(Link { bandwidth_mbps: 10_000, rtt_ms: 100.0 });
        assert_eq!(fat.receive_window_bytes, 250_000_000);
        assert_eq!(fat.stream_receive_window_bytes, 250_000_000);
        assert_eq!(fat.initial_rtt_ms, 100);
        // A LAN gets the floor, an absurd path the ceiling.
        let lan = base.for_link(Link { bandwidth_mbps: 1000, rtt_ms: 0.2 });
        assert_eq!(lan.send_window_bytes, MIN_WINDOW_BYTES);
        assert_eq!(lan.initial_rtt_ms, 1);
        let huge = base.for_link(Link { bandwidth_mbps: 400_000, rtt_ms: 300.0 });
        assert_eq!(huge.receive_window_bytes, MAX_WINDOW_BYTES);
        // Defaults: 1 Gbit/s at 100 ms, well above quinn's 1.25 MB stream window.
        assert_eq!(base.receive_window_bytes, 25_000_000);
        assert_eq!(base.congestion_controller, CongestionController::Bbr);
        base.validate().unwrap();
    }

    #[test]
    fn loss_based_controllers_get_more_connections_on_long_paths() {
        let cubic = TransportSettings { congestion_controller: CongestionController::Cubic, ..Default::default() };
        assert_eq!(cubic.for_link(Link { bandwidth_mbps: 1000, rtt_ms: 100.0 }).connections_per_peer, 4);
        assert_eq!(cubic.for_link(Link { bandwidth_mbps: 1000, rtt_ms: 2.0 }).connections_per_peer, 1);
        assert_eq!(cubic.for_link(Link { bandwidth_mbps: 1000, rtt_ms: 900.0 }).connections_per_peer, 8);
        let bbr = TransportSettings::default();
        assert_eq!(bbr.for_link(Link { bandwidth_mbps: 1000, rtt_ms: 100.0 }).connections_per_peer, 1);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = TransportSettings { connections_per_peer: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("connections_per_peer"));
        let bad = TransportSettings { keep_alive_interval_ms: 90_000, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("keep_alive_interval_ms"));
        let bad = TransportSettings { receive_window_bytes: 10, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("receive_window_bytes"));
        let bad = TransportSettings { initial_rtt_ms: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("initial_rtt_ms"));
    }

    #[test]
    fn settings_parse_from_toml_with_named_controllers() {
        let s: TransportSettings =
            toml::from_str("congestion_controller = \"cubic\"\nconnections_per_peer = 4\n").unwrap();
        assert_eq!(s.congestion_controller, CongestionController::Cubic);
        assert_eq!(s.connections_per_peer, 4);
        assert_eq!(s.receive_window_bytes, TransportSettings::default().receive_window_bytes);
        assert!(toml::from_str::<TransportSettings>("congestion_controller = \"vegas\"\n").is_err());
        assert!(toml::from_str::<TransportSettings>("window = 1\n").is_err());
    }
}
