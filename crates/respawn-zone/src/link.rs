//! The tick thread's handle on one client connection (its frames in flight,
//! counted against a bound it never waits on, and a way to close it with a
//! reason) and the way to the I/O thread that owns the sockets.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mio::{Poll, Token, Waker};
use respawn_proto::CloseCode;
use tokio::sync::oneshot;

/// Shared by a connection's socket (on the I/O thread), its join and the tick thread.
#[derive(Debug)]
pub struct ConnState {
    pub id: u64,
    close: Mutex<Option<(CloseCode, String)>>,
    /// Set with the reason: the I/O thread looks at it without the lock.
    closing: AtomicBool,
    /// Frames handed to the I/O thread that its socket has not taken yet.
    queued: AtomicUsize,
    /// The most frames that may wait so: past it, the client's updates are dropped.
    capacity: usize,
    /// The socket is closed: nothing more reaches the client.
    gone: AtomicBool,
}

impl ConnState {
    pub fn new(id: u64, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            close: Mutex::new(None),
            closing: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            capacity,
            gone: AtomicBool::new(false),
        })
    }

    /// Asks the connection to close; the first reason given wins. Never blocks
    /// for longer than an uncontended lock. The I/O thread closes it within
    /// one of its sweeps (or at once, for a close in a tick's deliveries).
    pub fn close(&self, code: CloseCode, reason: impl Into<String>) {
        if let Ok(mut slot) = self.close.lock() {
            slot.get_or_insert_with(|| (code, reason.into()));
        }
        self.closing.store(true, Ordering::Release);
    }

    pub fn close_reason(&self) -> Option<(CloseCode, String)> {
        self.close.lock().ok().and_then(|slot| slot.clone())
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The socket took `frames` more: their places in the queue are free.
    pub fn sent(&self, frames: usize) {
        self.queued.fetch_sub(frames, Ordering::AcqRel);
    }

    /// The socket is closed (frames for it are dropped).
    pub fn gone(&self) {
        self.gone.store(true, Ordering::Release);
    }
}

/// What the tick thread holds per connected client.
#[derive(Debug, Clone)]
pub struct ClientLink {
    pub conn: Arc<ConnState>,
    /// The protocol version the client joined with (its update format).
    pub protocol_version: u32,
}

/// Whether a client's outbound queue has room for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Ready,
    /// The client's buffer is full: nothing can be sent to it this tick.
    Full,
    /// The connection is gone.
    Closed,
}

impl ClientLink {
    /// Looks without waiting (two atomic loads).
    pub fn room(&self) -> Room {
        let conn = &self.conn;
        if conn.gone.load(Ordering::Acquire) {
            Room::Closed
        } else if conn.queued.load(Ordering::Acquire) >= conn.capacity {
            Room::Full
        } else {
            Room::Ready
        }
    }

    /// `frame` for this client, taking a place in its queue (after [`Self::room`] said `Ready`).
    pub fn frame(&self, frame: Bytes) -> Delivery {
        self.conn.queued.fetch_add(1, Ordering::AcqRel);
        Delivery::Frame(self.conn.id, frame)
    }
}

/// Work the tick thread hands to the I/O thread after each tick, in order.
#[derive(Debug)]
pub enum Delivery {
    /// A frame for the connection with this id.
    Frame(u64, Bytes),
    /// Close after the frames before it were handed over (a kick notice first).
    Close(Arc<ConnState>, CloseCode, String),
}

pub(crate) const WAKER: Token = Token(usize::MAX);

/// What other threads ask of the I/O thread ([`crate::sockets`]).
pub(crate) enum Request {
    Open(respawn_net::Handoff, oneshot::Sender<()>),
    Deliver(Vec<Delivery>),
    ShutDown,
}

/// The way to the I/O thread, which owns the players' sockets; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sockets {
    requests: Sender<Request>,
    waker: Arc<Waker>,
}

/// The I/O thread's side, until it starts.
pub(crate) struct IoQueue {
    pub poll: Poll,
    pub waker: Arc<Waker>,
    pub requests: Receiver<Request>,
}

impl Sockets {
    pub(crate) fn new() -> std::io::Result<(Self, IoQueue)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (requests, queue) = std::sync::mpsc::channel();
        Ok((Self { requests, waker: waker.clone() }, IoQueue { poll, waker, requests: queue }))
    }

    fn ask(&self, request: Request) {
        if self.requests.send(request).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// A new upgraded connection; `done` is dropped when it has closed.
    pub(crate) fn open(&self, handoff: respawn_net::Handoff, done: oneshot::Sender<()>) {
        self.ask(Request::Open(handoff, done));
    }

    /// A tick's frames and closes, in order.
    pub fn hand_over(&self, batch: Vec<Delivery>) {
        self.ask(Request::Deliver(batch));
    }

    /// Closes every connection (its own reason, or the server shutting
    /// down), then the I/O thread ends.
    pub(crate) fn shut_down(&self) {
        self.ask(Request::ShutDown);
    }
}
