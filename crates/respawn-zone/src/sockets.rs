//! The players' sockets after the WebSocket upgrade, all served by one
//! thread of the zone server's own (the I/O thread) with `mio`, rather than
//! by two tasks per connection on the async runtime. Each tick's frames
//! arrive in one batch and leave with one write per client (its queued
//! frames, and a ping when one is due, together); messages are read as they
//! come and go straight to the zone's command queue. With tasks, every frame
//! cost a channel hop, a task wake-up and a timer (BENCHMARKS.md has the
//! before and after). What needs the async world (a join's tokens and
//! stores) runs as a task and answers by message.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use respawn_proto::{client_message::Body, CloseCode, MAX_CLIENT_FRAME_BYTES};
use tokio::sync::oneshot;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::Message;

use crate::conn::{self, Incoming, Next, Playing};
use crate::link::{ConnState, Delivery, IoQueue, Request, WAKER};
use crate::server::state::ServerState;

/// How often every socket is looked at for deadlines and closes asked for
/// by other threads (a tick's closes are acted on at once).
const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// A ping goes out with the client's next update; alone only if none came this long after it was due.
const PING_ALONE_AFTER: Duration = Duration::from_millis(200);
/// Messages read from one socket before the others get a turn.
const READS_PER_TURN: usize = 32;
/// How long a closing connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Bytes a client's socket may hold back (frames are taken from its queue
/// only while it keeps up, so this is one turn's frames at most).
const MAX_WRITE_BUFFER: usize = 1 << 20;

/// Starts the I/O thread; it ends after [`crate::link::Sockets::shut_down`] once every
/// connection closed, or when the server state is gone.
pub(crate) fn start(queue: IoQueue, state: &Arc<ServerState>) -> io::Result<()> {
    let (answers, answered) = std::sync::mpsc::channel();
    let io = IoThread {
        state: Arc::downgrade(state),
        runtime: tokio::runtime::Handle::current(),
        poll: queue.poll,
        waker: queue.waker,
        requests: queue.requests,
        answers,
        answered,
        conns: HashMap::new(),
        unread: Vec::new(),
        last_sweep: Instant::now(),
        shutting_down: false,
    };
    std::thread::Builder::new().name("zone-io".into()).spawn(move || io.run())?;
    Ok(())
}

/// A join checked: the player in its zone, or why not.
type Answer = (u64, Result<Playing, (CloseCode, String)>);

enum Phase {
    /// Waiting for the join message until the deadline.
    Joining(Instant),
    /// The join is being checked: nothing more is read until it is.
    Checking,
    Playing(Box<Playing>),
    /// Our close frame is out: waiting for the client's until then.
    Closing(Instant),
}

struct Conn {
    ws: WebSocket<Drained>,
    state: Arc<ConnState>,
    phase: Phase,
    heard: Instant,
    next_ping: Instant,
    /// Frames from the zone not yet given to the socket (while it is
    /// blocked, or before the join is answered).
    pending: VecDeque<Bytes>,
    /// Frames given to the socket since it last took everything.
    unflushed: usize,
    /// Since when written bytes wait for the socket to take them.
    blocked_since: Option<Instant>,
    /// A read failed: what follows in the stream cannot be framed, so nothing more is read.
    unreadable: bool,
    _slot: respawn_net::Slot,
    idle_timed_out: prometheus::IntCounter,
    /// Dropped with the connection: the server's tracker sees it end.
    _done: oneshot::Sender<()>,
}

/// A socket that knows when it was read empty: a plain TCP read that
/// returns less than asked for took everything there was, and readiness is
/// edge-triggered (new bytes bring a new event), so the read that would only
/// say `WouldBlock` is skipped (it was half of all reads).
struct Drained {
    socket: respawn_net::Socket,
    empty: bool,
}

impl io::Read for Drained {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.empty {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let read = self.socket.read(buf)?;
        // Through TLS, a short read of plaintext says nothing of what the socket holds.
        if read < buf.len() && matches!(self.socket, respawn_net::Socket::Plain(_)) {
            self.empty = true;
        }
        Ok(read)
    }
}

impl io::Write for Drained {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

impl Conn {
    /// A WebSocket ping carrying its send time, for the RTT the pong measures.
    fn ping(&mut self, state: &ServerState, now: Instant) {
        self.next_ping = now + state.config.limits.ping_interval;
        let micros = state.epoch.elapsed().as_micros() as u64;
        let _ = self.ws.write(Message::Ping(Bytes::copy_from_slice(&micros.to_le_bytes())));
    }
}

struct IoThread {
    state: Weak<ServerState>,
    runtime: tokio::runtime::Handle,
    poll: Poll,
    waker: Arc<Waker>,
    requests: Receiver<Request>,
    /// Joins checked by their tasks come back here.
    answers: Sender<Answer>,
    answered: Receiver<Answer>,
    conns: HashMap<u64, Conn>,
    /// Sockets with input left to read: with edge-triggered readiness no new
    /// event would come for it.
    unread: Vec<u64>,
    last_sweep: Instant,
    shutting_down: bool,
}

impl IoThread {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.unread.is_empty() { SWEEP_EVERY } else { Duration::ZERO };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "the players' sockets cannot be polled; closing them");
                    break;
                }
            }
            let Some(state) = self.state.upgrade() else { break };
            let now = Instant::now();
            for event in events.iter() {
                let Token(id) = event.token();
                if event.token() == WAKER {
                    continue;
                }
                if event.is_writable() {
                    self.write_out(&state, id as u64, now);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    if let Some(conn) = self.conns.get_mut(&(id as u64)) {
                        conn.ws.get_mut().empty = false;
                    }
                    self.unread.push(id as u64);
                }
            }
            while let Ok(request) = self.requests.try_recv() {
                self.handle(&state, request, now);
            }
            while let Ok((id, answer)) = self.answered.try_recv() {
                self.answer(&state, id, answer, now);
            }
            for id in std::mem::take(&mut self.unread) {
                // What a peer sends must never take the other connections down with it.
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read(&state, id, now)));
                if read.is_err() {
                    tracing::error!(conn = id, "reading a connection failed; it is closed");
                    self.end(&state, id);
                }
            }
            if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
                self.last_sweep = now;
                self.sweep(&state, now);
            }
            if self.shutting_down && self.conns.is_empty() {
                break;
            }
        }
        for id in self.conns.keys().copied().collect::<Vec<_>>() {
            if let Some(state) = self.state.upgrade() {
                self.end(&state, id);
            }
        }
    }

    fn handle(&mut self, state: &ServerState, request: Request, now: Instant) {
        match request {
            Request::Open(handoff, done) => self.open(state, handoff, done, now),
            Request::Deliver(batch) => {
                // A connection's frames are written once those next to each other in the batch are in.
                let mut last = None;
                for delivery in batch {
                    let id = match delivery {
                        Delivery::Frame(id, frame) => {
                            if let Some(conn) = self.conns.get_mut(&id) {
                                conn.pending.push_back(frame);
                            }
                            id
                        }
                        Delivery::Close(conn, code, reason) => {
                            conn.close(code, reason);
                            conn.id
                        }
                    };
                    if let Some(before) = last.filter(|before| *before != id) {
                        self.write_out(state, before, now);
                    }
                    last = Some(id);
                }
                if let Some(id) = last {
                    self.write_out(state, id, now);
                }
            }
            Request::ShutDown => {
                self.shutting_down = true;
                for conn in self.conns.values() {
                    conn.state.close(CloseCode::GoingAway, "server shutting down");
                }
                self.sweep(state, now);
            }
        }
    }

    fn answer(&mut self, state: &ServerState, id: u64, answer: Result<Playing, (CloseCode, String)>, now: Instant) {
        match answer {
            Ok(playing) => match self.conns.get_mut(&id) {
                Some(conn) if matches!(conn.phase, Phase::Checking) => {
                    conn.phase = Phase::Playing(Box::new(playing));
                    self.unread.push(id);
                    self.write_out(state, id, now);
                }
                // Gone while its join was checked (or closing): the character waits for a resume.
                _ => playing.detach(state, id, false),
            },
            Err((code, reason)) => self.close(state, id, code, reason, false, now),
        }
    }

    fn open(&mut self, state: &ServerState, handoff: respawn_net::Handoff, done: oneshot::Sender<()>, now: Instant) {
        let id = state.next_conn_id();
        let fd = handoff.socket.as_raw_fd();
        let Ok(token) = usize::try_from(id) else { return };
        if let Err(e) =
            self.poll.registry().register(&mut SourceFd(&fd), Token(token), Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!(error = %e, "cannot watch a new connection; it is closed");
            return;
        }
        // A client frame fits in the read buffer, so no read zero-fills more than that.
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_CLIENT_FRAME_BYTES))
            .max_frame_size(Some(MAX_CLIENT_FRAME_BYTES))
            .read_buffer_size(MAX_CLIENT_FRAME_BYTES)
            .max_write_buffer_size(MAX_WRITE_BUFFER);
        let socket = Drained { socket: handoff.socket, empty: false };
        let ws = WebSocket::from_partially_read(socket, handoff.read_ahead, Role::Server, Some(config));
        state.metrics.connections().inc();
        let conn = Conn {
            ws,
            state: ConnState::new(id, state.config.limits.client_send_buffer),
            phase: Phase::Joining(now + state.config.limits.join_timeout),
            heard: now,
            next_ping: now + state.config.limits.ping_interval,
            pending: VecDeque::new(),
            unflushed: 0,
            blocked_since: None,
            unreadable: false,
            _slot: handoff.slot,
            idle_timed_out: handoff.idle_timed_out,
            _done: done,
        };
        self.conns.insert(id, conn);
        self.unread.push(id);
    }

    /// Reads what the socket has (up to a turn's worth) and acts on it.
    fn read(&mut self, state: &Arc<ServerState>, id: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let mut outcome = None;
        let mut more = false;
        for turn in 0..=READS_PER_TURN {
            if turn == READS_PER_TURN {
                more = true;
                break;
            }
            if matches!(conn.phase, Phase::Checking) {
                // Read once the join is decided; the client waits for its welcome.
                more = false;
                break;
            }
            if conn.unreadable {
                break;
            }
            let read = conn.ws.read();
            match &read {
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Ok(_) => conn.heard = now,
                Err(_) => conn.unreadable = true,
            }
            if let Phase::Closing(_) = conn.phase {
                // Only the client's close (or the end of the socket) is waited for.
                if read.is_err() {
                    outcome = Some(Ended::Gone);
                    break;
                }
                continue;
            }
            let zone = match &conn.phase {
                Phase::Playing(p) => Some(p.zone.clone()),
                _ => None,
            };
            let incoming = conn::classify(read, zone.as_deref());
            match &mut conn.phase {
                Phase::Joining(_) => match incoming {
                    Incoming::Body(Body::Join(join)) => {
                        conn.phase = Phase::Checking;
                        let (state, conn_state) = (state.clone(), conn.state.clone());
                        let (answers, waker) = (self.answers.clone(), self.waker.clone());
                        self.runtime.spawn(async move {
                            let answer = conn::join(state, conn_state, join).await;
                            if answers.send((id, answer)).is_ok() {
                                let _ = waker.wake();
                            }
                        });
                    }
                    Incoming::Body(_) => {
                        state.metrics.client_error(CloseCode::JoinRequired.as_str());
                        let reason = "the first message must be join".into();
                        outcome = Some(Ended::Close(CloseCode::JoinRequired, reason, false));
                    }
                    Incoming::Violation(code, reason) => {
                        state.metrics.client_error(code.as_str());
                        outcome = Some(Ended::Close(code, reason, false));
                    }
                    Incoming::Closed => outcome = Some(Ended::Gone),
                    Incoming::Pong(_) | Incoming::Nothing => {}
                },
                Phase::Playing(playing) => {
                    let ws = &mut conn.ws;
                    let mut reply = |frame: Bytes| {
                        let _ = ws.write(Message::Binary(frame));
                    };
                    if let Next::Close { code, reason, left } = playing.on_message(state, incoming, &mut reply) {
                        outcome = Some(Ended::Close(code, reason, left));
                    }
                }
                Phase::Checking | Phase::Closing(_) => {}
            }
            if outcome.is_some() {
                break;
            }
        }
        match outcome {
            Some(Ended::Gone) => return self.end(state, id),
            Some(Ended::Close(code, reason, left)) => return self.close(state, id, code, reason, left, now),
            None => {}
        }
        if more {
            self.unread.push(id);
        }
        // Answers (and the library's pongs) go out now.
        self.flush(state, id, now);
    }

    /// Moves the client's queued frames to its socket, unless the socket
    /// holds back what it was given already.
    fn write_out(&mut self, state: &ServerState, id: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.state.is_closing() && !matches!(conn.phase, Phase::Closing(_)) {
            let (code, reason) = conn.state.close_reason().unwrap_or((CloseCode::GoingAway, String::new()));
            return self.close(state, id, code, reason, false, now);
        }
        if conn.blocked_since.is_none() && matches!(conn.phase, Phase::Playing(_)) {
            while let Some(frame) = conn.pending.pop_front() {
                // Refused only past the write buffer's cap, which one turn's frames never reach.
                let _ = conn.ws.write(Message::Binary(frame));
                conn.unflushed += 1;
            }
            if now >= conn.next_ping {
                // Rides with the update: one write, not two.
                conn.ping(state, now);
            }
        }
        self.flush(state, id, now);
    }

    /// Writes what the socket can take; a socket that takes nothing for the
    /// write timeout is cut off by the sweep.
    fn flush(&mut self, state: &ServerState, id: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        match conn.ws.flush() {
            Ok(()) => {
                conn.state.sent(std::mem::take(&mut conn.unflushed));
                let was_blocked = conn.blocked_since.take().is_some();
                if was_blocked && matches!(conn.phase, Phase::Playing(_)) {
                    // Frames queued while it was blocked.
                    self.write_out(state, id, now);
                }
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.blocked_since.get_or_insert(now);
            }
            Err(_) => {
                conn.state.close(CloseCode::Normal, "connection lost");
                self.end(state, id);
            }
        }
    }

    /// Closes the connection with `code`, after the frames already queued
    /// for it (a kick or shutdown notice); the first reason given wins.
    fn close(&mut self, state: &ServerState, id: u64, code: CloseCode, reason: String, left: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if matches!(conn.phase, Phase::Closing(_)) {
            return;
        }
        conn.state.close(code, reason);
        conn.state.gone();
        let (code, reason) = conn.state.close_reason().unwrap_or((code, String::new()));
        if let Phase::Playing(playing) = std::mem::replace(&mut conn.phase, Phase::Closing(now + CLOSE_LINGER)) {
            for frame in conn.pending.drain(..) {
                let _ = conn.ws.write(Message::Binary(frame));
            }
            if code == CloseCode::GoingAway {
                playing.zone.metrics.disconnected(code.as_str());
            }
            playing.detach(state, id, left);
        }
        let _ = conn.ws.close(Some(conn::close_frame(code, &reason)));
        self.flush(state, id, now);
    }

    /// Drops the connection (its socket closes); a player in a zone leaves
    /// it, its character waiting for a resume.
    fn end(&mut self, state: &ServerState, id: u64) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        conn.state.gone();
        let _ = self.poll.registry().deregister(&mut SourceFd(&conn.ws.get_ref().socket.as_raw_fd()));
        if let Phase::Playing(playing) = std::mem::replace(&mut conn.phase, Phase::Checking) {
            playing.detach(state, id, false);
        }
        state.metrics.connections().dec();
        tracing::debug!(conn = id, reason = ?conn.state.close_reason(), "connection closed");
    }

    /// Pings, deadlines, and closes asked for by other threads.
    fn sweep(&mut self, state: &ServerState, now: Instant) {
        let limits = &state.config.limits;
        let mut due = Vec::new();
        for (id, conn) in &self.conns {
            let action = match conn.phase {
                Phase::Closing(until) if now >= until => Some(Sweep::End),
                Phase::Closing(_) => None,
                _ if conn.state.is_closing() => Some(Sweep::Close),
                Phase::Joining(deadline) if now >= deadline => Some(Sweep::JoinTimeout),
                _ if conn.blocked_since.is_some_and(|since| now.duration_since(since) >= limits.write_timeout) => {
                    Some(Sweep::TooSlow)
                }
                _ if now.duration_since(conn.heard) >= respawn_net::IDLE_TIMEOUT => Some(Sweep::Idle),
                // No update took it along.
                Phase::Playing(_) if now >= conn.next_ping + PING_ALONE_AFTER => Some(Sweep::Ping),
                _ => None,
            };
            if let Some(action) = action {
                due.push((*id, action));
            }
        }
        for (id, action) in due {
            match action {
                Sweep::End => self.end(state, id),
                Sweep::Idle => {
                    if let Some(conn) = self.conns.get(&id) {
                        conn.idle_timed_out.inc();
                    }
                    self.end(state, id);
                }
                Sweep::Close => self.write_out(state, id, now),
                Sweep::JoinTimeout => {
                    state.metrics.client_error(CloseCode::JoinTimeout.as_str());
                    self.close(state, id, CloseCode::JoinTimeout, "no join message in time".into(), false, now);
                }
                Sweep::TooSlow => {
                    let Some(conn) = self.conns.get(&id) else { continue };
                    conn.state.close(CloseCode::TooSlow, "write timed out");
                    if let Phase::Playing(playing) = &conn.phase {
                        playing.zone.metrics.disconnected(CloseCode::TooSlow.as_str());
                    }
                    self.end(state, id);
                }
                Sweep::Ping => {
                    let Some(conn) = self.conns.get_mut(&id) else { continue };
                    conn.ping(state, now);
                    self.flush(state, id, now);
                }
            }
        }
    }
}

enum Ended {
    /// The socket is gone: nothing more can be sent.
    Gone,
    Close(CloseCode, String, bool),
}

enum Sweep {
    End,
    /// Nothing read for the idle timeout.
    Idle,
    Close,
    JoinTimeout,
    TooSlow,
    Ping,
}
