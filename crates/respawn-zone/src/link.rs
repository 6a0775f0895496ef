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
}

/// Result of offering a frame to a client without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The client's buffer is full: the frame is dropped.
    Full,
    /// The connection is gone.
    Closed,
}

impl ClientLink {
    pub fn offer(&self, frame: Bytes) -> Offer {
        match self.out.try_send(frame) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
        }
    }
}
