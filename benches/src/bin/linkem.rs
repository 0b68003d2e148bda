//! `linkem`: a userspace WAN link emulator between two interfaces of one network namespace.
//!
//! This machine's kernel has no netem, so the WAN benchmark joins two namespaces through a
//! third one where `linkem` reads every Ethernet frame from one veth with an AF_PACKET socket
//! and forwards it to the other after a one-way delay (half the RTT), seeded random loss and a
//! rate limit with a bounded tail-drop queue, separately per direction. Every tool crosses the
//! same link, and the per-direction counters give the bytes on the wire the same way for all.
//!
//! One thread per direction: receive a batch (`recvmmsg`) into preallocated ring slots, decide
//! loss, queueing and delivery time for each frame ([`benches::link`]), then send what is due
//! in batches (`sendmmsg`), sleeping in `ppoll` until the next frame is due or one arrives.
//!
//! Counters: `SIGUSR1` writes them to `--stats-file` (with a sequence number that grows by
//! one per write); `SIGINT`/`SIGTERM` stop, write them and print them on stderr.

use benches::link::{FrameRing, LossSampler, SLOT_BYTES, Serializer};
use clap::Parser;
use std::ffi::CString;
use std::io;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Frames per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 64;
/// Receive buffer of each AF_PACKET socket: ~20 ms of 1 Gbit/s, so that a forwarding thread
/// descheduled by a compiler on the shared cores does not cost drops. Set with
/// SO_RCVBUFFORCE, which ignores the host-only `net.core.rmem_max` (needs CAP_NET_ADMIN).
const SOCKET_RCVBUF_BYTES: libc::c_int = 32 << 20;
/// Longest sleep when nothing is queued, so that a stop or stats request is seen promptly.
const IDLE_POLL_NS: u64 = 20_000_000;

#[derive(Parser, Debug)]
#[command(
    about = "Userspace WAN link emulator: forwards frames between two interfaces with delay, loss and a rate limit"
)]
struct Args {
    /// Interface towards side A (frames read here go out on --b)
    #[arg(long)]
    a: String,
    /// Interface towards side B
    #[arg(long)]
    b: String,
    /// Round-trip time added by the link, ms (half in each direction)
    #[arg(long, default_value_t = 0.0)]
    rtt_ms: f64,
    /// Random loss per packet and direction, percent (0.1 = one packet in a thousand)
    #[arg(long, default_value_t = 0.0)]
    loss_pct: f64,
    /// Link rate per direction, bit/s with an optional k/m/g suffix (1g); 0 = unlimited
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    rate: u64,
    /// Output queue per direction, bytes (k/m suffix allowed); default one bandwidth-delay
    /// product of --rate × --rtt-ms, at least 256 KiB
    #[arg(long, value_parser = parse_bytes)]
    queue_bytes: Option<u64>,
    /// Seed of the loss sampler: same seed, same packets lost
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Send frames due within this many µs together (fewer wake-ups; shapes bursts of a few
    /// frames at most at 1 Gbit/s)
    #[arg(long, default_value_t = 30)]
    batch_us: u64,
    /// Where to write the counters on SIGUSR1 and at exit
    #[arg(long)]
    stats_file: Option<std::path::PathBuf>,
}

fn parse_with_suffix(s: &str, unit: u64) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], unit),
        Some((i, 'm' | 'M')) => (&s[..i], unit * unit),
        Some((i, 'g' | 'G')) => (&s[..i], unit * unit * unit),
        _ => (s, 1),
    };
    let value: f64 = digits.parse().map_err(|_| format!("{s:?} is not a number with an optional k/m/g suffix"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{s:?} must be a non-negative number"));
    }
    Ok((value * mult as f64).round() as u64)
}

fn parse_rate(s: &str) -> Result<u64, String> {
    parse_with_suffix(s, 1000)
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_with_suffix(s, 1024)
}

/// The validated link of one direction.
#[derive(Debug, Clone, Copy)]
struct LinkConfig {
    rate_bps: Option<u64>,
    one_way_delay_ns: u64,
    loss: f64,
    queue_bytes: u64,
    seed: u64,
    batch_ns: u64,
    ring_slots: usize,
}

fn validate(args: &Args) -> Result<LinkConfig, String> {
    if args.a == args.b {
        return Err(format!("--a and --b are both {:?}: give the two interfaces to bridge", args.a));
    }
    if !(args.rtt_ms.is_finite() && (0.0..=10_000.0).contains(&args.rtt_ms)) {
        return Err(format!("--rtt-ms {} must be between 0 and 10000", args.rtt_ms));
    }
    if !(args.loss_pct.is_finite() && (0.0..=100.0).contains(&args.loss_pct)) {
        return Err(format!("--loss-pct {} must be between 0 and 100", args.loss_pct));
    }
    let rate_bps = (args.rate > 0).then_some(args.rate);
    let one_way_delay_ns = (args.rtt_ms * 1e6 / 2.0).round() as u64;
    let bdp_bytes = rate_bps.map_or(0, |r| (r as f64 * args.rtt_ms / 1e3 / 8.0) as u64);
    let queue_bytes = args.queue_bytes.unwrap_or(bdp_bytes.max(256 << 10));
    if queue_bytes < SLOT_BYTES as u64 && rate_bps.is_some() {
        return Err(format!("--queue-bytes {queue_bytes} holds no full frame: give at least {SLOT_BYTES}"));
    }
    // Frames in flight: the queue plus one delay of the link's rate (or, unlimited, of
    // 10 Gbit/s), counted in small frames (ACKs are 66 bytes, but half the slots suffice
    // when mixed with data) — capped to keep the ring within 512 MiB.
    let in_flight_bytes = queue_bytes + rate_bps.unwrap_or(10_000_000_000) / 8 * one_way_delay_ns / 1_000_000_000;
    let ring_slots = ((in_flight_bytes / 256) as usize).clamp(4096, (512 << 20) / SLOT_BYTES);
    Ok(LinkConfig {
        rate_bps,
        one_way_delay_ns,
        loss: args.loss_pct / 100.0,
        queue_bytes,
        seed: args.seed,
        batch_ns: args.batch_us * 1000,
        ring_slots,
    })
}

/// Counters of one direction, updated once per batch.
#[derive(Default)]
struct Counters {
    frames_received: AtomicU64,
    frames_forwarded: AtomicU64,
    bytes_forwarded: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_queue: AtomicU64,
    /// frames larger than a slot: segmentation offload left on
    dropped_oversize: AtomicU64,
    dropped_send_error: AtomicU64,
}

impl Counters {
    fn render(&self, name: &str) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{name}.frames_received {}\n{name}.frames_forwarded {}\n{name}.bytes_forwarded {}\n\
             {name}.dropped_loss {}\n{name}.dropped_queue {}\n{name}.dropped_oversize {}\n{name}.dropped_send_error {}\n",
            get(&self.frames_received),
            get(&self.frames_forwarded),
            get(&self.bytes_forwarded),
            get(&self.dropped_loss),
            get(&self.dropped_queue),
            get(&self.dropped_oversize),
            get(&self.dropped_send_error),
        )
    }
}

static STOP: AtomicBool = AtomicBool::new(false);
static DUMP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_dump(_: libc::c_int) {
    DUMP.store(true, Ordering::Relaxed);
}

/// An AF_PACKET socket bound to one interface; closed on drop.
struct PacketSocket(libc::c_int);

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn check(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(ret)
}

fn setsockopt_int(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    what: &str,
) -> io::Result<()> {
    // SAFETY: the option value is a c_int that outlives the call.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(ret, what).map(|_| ())
}

fn interface_index(name: &str) -> Result<libc::c_int, String> {
    let c = CString::new(name).map_err(|_| format!("interface name {name:?} contains a NUL byte"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(format!(
            "no interface {name:?} in this network namespace: run linkem inside the link namespace (ip netns exec)"
        ));
    }
    Ok(index as libc::c_int)
}

impl PacketSocket {
    /// A socket on `ifindex`: `receive` sockets get every frame arriving there (not the
    /// ones sent from this host) in promiscuous mode; send-only sockets receive nothing.
    fn open(ifindex: libc::c_int, receive: bool) -> io::Result<Self> {
        // Protocol 0 receives nothing until bind names the protocol, so frames from other
        // interfaces never reach the socket between socket() and bind().
        // SAFETY: plain syscall.
        let fd = check(
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) },
            "socket(AF_PACKET)",
        )?;
        let sock = PacketSocket(fd);
        let protocol = if receive { (libc::ETH_P_ALL as u16).to_be() } else { 0 };
        if receive {
            // Without this the socket would also see the frames the other thread sends out of
            // this interface, and forward them back: a loop.
            setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")?;
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_RCVBUF_BYTES, "SO_RCVBUFFORCE")?;
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            // SAFETY: mreq outlives the call and has the size we pass.
            let ret = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    (&mreq as *const libc::packet_mreq).cast(),
                    std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
                )
            };
            check(ret, "PACKET_ADD_MEMBERSHIP (promiscuous)")?;
        }
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex;
        // SAFETY: addr outlives the call and has the size we pass.
        let ret = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(ret, "bind(AF_PACKET)")?;
        Ok(sock)
    }
}

/// Nanoseconds on a monotonic clock shared by both directions.
fn now_ns(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// Forwards one direction until STOP: frames read on `rx` go out on `tx`.
fn forward(
    rx: PacketSocket,
    tx: PacketSocket,
    config: LinkConfig,
    stream: u64,
    counters: Arc<Counters>,
    origin: Instant,
) {
    let mut ring = FrameRing::new(config.ring_slots);
    let mut link = Serializer::new(config.rate_bps, config.queue_bytes);
    let mut loss = LossSampler::new(config.seed, stream, config.loss);
    // SAFETY (all the zeroed structs below): plain C data, zero is a valid start; the
    // pointers in them are set before every call that reads them.
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut send_iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut send_msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut pfd = libc::pollfd { fd: rx.0, events: libc::POLLIN, revents: 0 };

    while !STOP.load(Ordering::Relaxed) {
        // Sleep until a frame arrives or the oldest queued frame is due.
        let now = now_ns(origin);
        let wait_ns = ring.next_deliver_at_ns().map_or(IDLE_POLL_NS, |at| at.saturating_sub(now));
        // With the ring full, wait for the next delivery only: a readable socket would
        // otherwise wake ppoll at once, over and over, until a slot frees up.
        pfd.events = if ring.len() < ring.capacity() { libc::POLLIN } else { 0 };
        if wait_ns > 0 {
            let ts = libc::timespec { tv_sec: (wait_ns / 1_000_000_000) as _, tv_nsec: (wait_ns % 1_000_000_000) as _ };
            // SAFETY: pfd and ts outlive the call. EINTR (a signal) just loops.
            unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        }

        // Receive everything waiting, straight into free ring slots.
        let (mut received, mut lost, mut dropped_queue, mut oversize) = (0u64, 0u64, 0u64, 0u64);
        loop {
            let (buf, slots) = ring.free_slots(BATCH);
            if slots == 0 {
                break; // ring full: frames wait in the socket buffer (or the kernel drops them)
            }
            for i in 0..slots {
                iov[i] = libc::iovec { iov_base: buf[i * SLOT_BYTES..].as_mut_ptr().cast(), iov_len: SLOT_BYTES };
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_hdr.msg_flags = 0;
            }
            // SAFETY: msgs[..slots] point at iovecs into live ring slots of SLOT_BYTES each.
            let n = unsafe {
                libc::recvmmsg(
                    rx.0,
                    msgs.as_mut_ptr(),
                    slots as u32,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                break;
            }
            let arrived = now_ns(origin);
            for (i, msg) in msgs.iter().enumerate().take(n as usize) {
                let len = msg.msg_len as usize;
                received += 1;
                if len > SLOT_BYTES || msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    oversize += 1;
                } else if loss.lose() {
                    lost += 1;
                } else {
                    match link.admit(arrived, len) {
                        Some(left_link_at) => ring.keep(i, len, left_link_at + config.one_way_delay_ns),
                        None => dropped_queue += 1,
                    }
                }
            }
            if (n as usize) < slots {
                break;
            }
        }
        if received > 0 {
            counters.frames_received.fetch_add(received, Ordering::Relaxed);
            counters.dropped_loss.fetch_add(lost, Ordering::Relaxed);
            counters.dropped_queue.fetch_add(dropped_queue, Ordering::Relaxed);
            counters.dropped_oversize.fetch_add(oversize, Ordering::Relaxed);
        }

        // Send what is due (or due within the batch window).
        let until = now_ns(origin) + config.batch_ns;
        let (mut sent_frames, mut sent_bytes, mut send_errors) = (0u64, 0u64, 0u64);
        loop {
            let n = ring.due(until, BATCH, |i, frame| {
                send_iov[i] = libc::iovec { iov_base: frame.as_ptr() as *mut _, iov_len: frame.len() };
                send_msgs[i].msg_hdr.msg_iov = &mut send_iov[i];
                send_msgs[i].msg_hdr.msg_iovlen = 1;
            });
            if n == 0 {
                break;
            }
            let mut done = 0;
            while done < n {
                // SAFETY: send_msgs[done..n] point at frames held in the ring until pop().
                let ret = unsafe { libc::sendmmsg(tx.0, send_msgs[done..].as_mut_ptr(), (n - done) as u32, 0) };
                if ret < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // The frame at `done` could not be sent (e.g. ENOBUFS): count it lost.
                    send_errors += 1;
                    done += 1;
                    continue;
                }
                for m in &send_msgs[done..done + ret as usize] {
                    sent_bytes += m.msg_len as u64;
                }
                sent_frames += ret as u64;
                done += ret as usize;
            }
            ring.pop(n);
        }
        if sent_frames + send_errors > 0 {
            counters.frames_forwarded.fetch_add(sent_frames, Ordering::Relaxed);
            counters.bytes_forwarded.fetch_add(sent_bytes, Ordering::Relaxed);
            counters.dropped_send_error.fetch_add(send_errors, Ordering::Relaxed);
        }
    }
}

fn write_stats(path: &std::path::Path, seq: u64, a_to_b: &Counters, b_to_a: &Counters) -> io::Result<()> {
    let text = format!("seq {seq}\n{}{}", a_to_b.render("a_to_b"), b_to_a.render("b_to_a"));
    // Written beside and renamed, so that a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn run(args: Args) -> Result<(), (u8, String)> {
    let config = validate(&args).map_err(|e| (2, e))?;
    let index_a = interface_index(&args.a).map_err(|e| (2, e))?;
    let index_b = interface_index(&args.b).map_err(|e| (2, e))?;
    let open = |index, receive, name: &str| {
        PacketSocket::open(index, receive).map_err(|e| {
            (
                1,
                format!(
                    "cannot open a packet socket on {name}: {e} (linkem needs root or CAP_NET_RAW + CAP_NET_ADMIN)"
                ),
            )
        })
    };
    let (rx_a, tx_a) = (open(index_a, true, &args.a)?, open(index_a, false, &args.a)?);
    let (rx_b, tx_b) = (open(index_b, true, &args.b)?, open(index_b, false, &args.b)?);

    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGUSR1, on_dump as *const () as libc::sighandler_t);
        // Wake-ups are tens of µs apart at 1 Gbit/s: the default 50 µs timer slack would
        // double them. Per thread, inherited by the threads spawned below.
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }

    let origin = Instant::now();
    let a_to_b = Arc::new(Counters::default());
    let b_to_a = Arc::new(Counters::default());
    let threads = [
        {
            let c = Arc::clone(&a_to_b);
            std::thread::Builder::new().name("a-to-b".into()).spawn(move || forward(rx_a, tx_b, config, 0, c, origin))
        },
        {
            let c = Arc::clone(&b_to_a);
            std::thread::Builder::new().name("b-to-a".into()).spawn(move || forward(rx_b, tx_a, config, 1, c, origin))
        },
    ];
    let threads: Vec<_> =
        threads.into_iter().collect::<io::Result<_>>().map_err(|e| (1, format!("cannot start a thread: {e}")))?;
    eprintln!(
        "linkem: {} <-> {}: rate {}, one-way delay {} µs, loss {}%, queue {} bytes, {} slots per direction",
        args.a,
        args.b,
        config.rate_bps.map_or("unlimited".to_string(), |r| format!("{r} bit/s")),
        config.one_way_delay_ns / 1000,
        args.loss_pct,
        config.queue_bytes,
        config.ring_slots
    );

    let mut seq = 0;
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
        if DUMP.swap(false, Ordering::Relaxed)
            && let Some(path) = &args.stats_file
        {
            seq += 1;
            write_stats(path, seq, &a_to_b, &b_to_a)
                .map_err(|e| (1, format!("cannot write the stats file {}: {e}", path.display())))?;
        }
    }
    for t in threads {
        let _ = t.join();
    }
    if let Some(path) = &args.stats_file {
        write_stats(path, seq + 1, &a_to_b, &b_to_a)
            .map_err(|e| (1, format!("cannot write the stats file {}: {e}", path.display())))?;
    }
    eprint!("{}{}", a_to_b.render("a_to_b"), b_to_a.render("b_to_a"));
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("linkem: {message}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["linkem", "--a", "la", "--b", "lb"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn rates_and_sizes_take_suffixes() {
        assert_eq!(parse_rate("1g"), Ok(1_000_000_000));
        assert_eq!(parse_rate("2.5M"), Ok(2_500_000));
        assert_eq!(parse_bytes("4m"), Ok(4 << 20));
        assert_eq!(parse_bytes("1500"), Ok(1500));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1g").is_err());
    }

    #[test]
    fn default_queue_is_one_bdp() {
        let c = validate(&args(&["--rate", "1g", "--rtt-ms", "40"])).unwrap();
        assert_eq!(c.queue_bytes, 5_000_000);
        assert_eq!(c.one_way_delay_ns, 20_000_000);
        // Short RTT: the floor keeps a few frames' worth of queue.
        let c = validate(&args(&["--rate", "1g", "--rtt-ms", "0.1"])).unwrap();
        assert_eq!(c.queue_bytes, 256 << 10);
        assert!(validate(&args(&[])).unwrap().rate_bps.is_none());
    }

    #[test]
    fn bad_link_parameters_are_refused() {
        assert!(validate(&args(&["--loss-pct", "101"])).is_err());
        assert!(validate(&args(&["--rtt-ms=-1"])).is_err());
        assert!(validate(&args(&["--rate", "1g", "--queue-bytes", "100"])).is_err());
        let same = Args::try_parse_from(["linkem", "--a", "x", "--b", "x"]).unwrap();
        assert!(validate(&same).is_err());
    }
}
