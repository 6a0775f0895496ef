//! The tick thread's handle on one client connection: a bounded outbound
//! queue it never waits on, and a way to close the connection with a reason.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use respawn_proto::CloseCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Shared by a connection's reader, writer and the tick thread.
#[derive(Debug)]
pub struct ConnState {
    pub id: u64,
    close: Mutex<Option<(CloseCode, String)>>,
    cancel: CancellationToken,
}

impl ConnState {
    pub fn new(id: u64, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Self { id, close: Mutex::new(None), cancel })
    }

    /// Asks the connection to close; the first reason given wins. Never blocks
    /// for longer than an uncontended lock.
    pub fn close(&self, code: CloseCode, reason: impl Into<String>) {
        if let Ok(mut slot) = self.close.lock() {
            slot.get_or_insert_with(|| (code, reason.into()));
        }
        self.cancel.cancel();
    }

    pub fn close_reason(&self) -> Option<(CloseCode, String)> {
        self.close.lock().ok().and_then(|slot| slot.clone())
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }
}

/// What the tick thread holds per connected client.
#[derive(Debug, Clone)]
pub struct ClientLink {
    pub conn: Arc<ConnState>,
    pub out: mpsc::Sender<Bytes>,
    /// The protocol version the client joined with (its update format).
    pub protocol_version: u32,
}

/// Result of asking for a slot in a client's outbound queue.
#[derive(Debug)]
pub enum Reserve {
    Ready(mpsc::OwnedPermit<Bytes>),
    /// The client's buffer is full: nothing can be sent to it this tick.
    Full,
    /// The connection is gone.
    Closed,
}

impl ClientLink {
    /// Reserves one slot without waiting (a lock-free semaphore step).
    pub fn reserve(&self) -> Reserve {
        match self.out.clone().try_reserve_owned() {
            Ok(permit) => Reserve::Ready(permit),
            Err(mpsc::error::TrySendError::Full(_)) => Reserve::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Reserve::Closed,
        }
    }
}

/// Work the tick thread hands to its zone's fan-out task, in order. Sending
/// through a reserved slot cannot fail; waking the connection tasks happens
/// on the runtime, not on the tick thread.
#[derive(Debug)]
pub enum Delivery {
    Frame(mpsc::OwnedPermit<Bytes>, Bytes),
    /// Close after the frames before it were handed over (a kick notice first).
    Close(Arc<ConnState>, CloseCode, String),
}

impl Delivery {
    pub fn deliver(self) {
        match self {
            Delivery::Frame(permit, frame) => {
                permit.send(frame);
            }
            Delivery::Close(conn, code, reason) => conn.close(code, reason),
        }
    }
}

/// A zone's fan-out task: delivers each tick's batch.
pub async fn fan_out(mut batches: mpsc::UnboundedReceiver<Vec<Delivery>>) {
    while let Some(batch) = batches.recv().await {
        for delivery in batch {
            delivery.deliver();
        }
    }
}
