//! Cold snapshots on MongoDB through the official driver. Insert-only
//! documents; the newest is chosen by tick in this process (never by the
//! server's sort, which some wire-compatible servers silently ignore); old
//! ones are deleted by filter. Targets MongoDB 6.0 and later; tested against
//! SecantusDB, a MongoDB-wire-compatible server (see docs/storage.md).
//!
//! Fencing. Each zone has a document in `cold_fences`: the newest lease
//! token the store knows of, and the snapshots committed so far (tick →
//! token). A snapshot is inserted first, then committed by one conditional
//! update of that document, which fails once a newer token is there: the
//! check and the commit are one atomic step. Only committed snapshots are
//! listed or read. A new owner raises the token ([`ColdSnapshots::fence`])
//! before it reads.

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryStreamExt};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, Document};
use mongodb::options::{ClientOptions, CollectionOptions, IndexOptions, WriteConcern};
use mongodb::{Collection, IndexModel};
use tokio::sync::OnceCell;

use crate::{bounded, ColdSnapshots, Fence, SnapshotMeta, StoreError, StoreResult, StoredSnapshot, CALL_TIMEOUT};

const BACKEND: &str = "mongodb";

fn err(e: mongodb::error::Error) -> StoreError {
    use mongodb::error::ErrorKind;
    match *e.kind {
        ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
            StoreError::Unavailable { backend: BACKEND, message: e.to_string() }
        }
        _ => StoreError::Backend { backend: BACKEND, message: e.to_string() },
    }
}

#[derive(Debug, Clone)]
pub struct MongoColdSnapshots {
    collection: Collection<Document>,
    fences: Collection<Document>,
    index: std::sync::Arc<OnceCell<()>>,
}

impl MongoColdSnapshots {
    /// `uri` like `mongodb://127.0.0.1:27017/?directConnection=true`; no
    /// connection is made until the first call.
    pub async fn new(uri: &str, database: &str) -> StoreResult<Self> {
        Self::in_collections(uri, database, "cold_snapshots", "cold_fences").await
    }

    /// The zones' archived history ([`crate::history`]): the same store in
    /// `history_segments`, fenced by `history_fences`.
    pub async fn history(uri: &str, database: &str) -> StoreResult<Self> {
        Self::in_collections(uri, database, "history_segments", "history_fences").await
    }

    async fn in_collections(uri: &str, database: &str, blobs: &str, fences: &str) -> StoreResult<Self> {
        let mut options =
            ClientOptions::parse(uri).await.map_err(|e| StoreError::Invalid(format!("mongodb uri {uri:?}: {e}")))?;
        options.server_selection_timeout = Some(CALL_TIMEOUT);
        options.connect_timeout = Some(CALL_TIMEOUT);
        options.app_name = Some("respawn".into());
        let client = mongodb::Client::with_options(options).map_err(err)?;
        // A stored snapshot must survive the server's crash: acknowledged
        // only once it is in the journal (a standalone server's default
        // acknowledges from memory, and a kill within ~100 ms loses it).
        let journaled =
            CollectionOptions::builder().write_concern(WriteConcern::builder().journal(true).build()).build();
        let db = client.database(database);
        let collection = db.collection_with_options::<Document>(blobs, journaled.clone());
        let fences = db.collection_with_options::<Document>(fences, journaled);
        Ok(Self { collection, fences, index: Default::default() })
    }

    /// Creates the (zone, tick) index once where the server supports it.
    async fn ensure_index(&self) {
        self.index
            .get_or_init(|| async {
                let model = IndexModel::builder()
                    .keys(doc! { "zone": 1, "tick": -1 })
                    .options(IndexOptions::builder().name("zone_tick".to_owned()).build())
                    .build();
                match tokio::time::timeout(CALL_TIMEOUT, self.collection.create_index(model)).await {
                    Ok(Ok(_)) => tracing::info!("cold snapshot index (zone, tick) is in place"),
                    Ok(Err(e)) => tracing::warn!(
                        error = %e,
                        "this MongoDB-compatible server cannot create indexes; cold snapshots work without one"
                    ),
                    Err(_) => tracing::warn!("creating the cold snapshot index timed out; continuing without it"),
                }
            })
            .await;
    }

    fn meta_of(doc: &Document) -> StoreResult<SnapshotMeta> {
        let int = |k: &str| match doc.get(k) {
            Some(Bson::Int64(v)) => Ok(*v),
            Some(Bson::Int32(v)) => Ok(i64::from(*v)),
            _ => Err(StoreError::Corrupt(format!("cold snapshot document without {k}"))),
        };
        Ok(SnapshotMeta {
            zone: int("zone")? as u32,
            tick: int("tick")? as u64,
            taken_at_ms: int("taken_at_ms")? as u64,
        })
    }

    /// Every committed snapshot's document for `zone` (with its data only
    /// `with_data`: a listing must not download every blob), `filter` added.
    async fn committed(&self, zone: u32, mut filter: Document, with_data: bool) -> StoreResult<Vec<Document>> {
        let fence = self.fences.find_one(doc! { "_id": i64::from(zone) }).await.map_err(err)?;
        let committed = fence.as_ref().and_then(|f| f.get_document("committed").ok());
        filter.insert("zone", i64::from(zone));
        let mut find = self.collection.find(filter);
        if !with_data {
            find = find.projection(doc! { "zone": 1, "tick": 1, "taken_at_ms": 1, "token": 1 });
        }
        let docs: Vec<Document> = find.await.map_err(err)?.try_collect().await.map_err(err)?;
        Ok(docs
            .into_iter()
            .filter(|d| {
                let tick = Self::meta_of(d).map_or(0, |m| m.tick);
                match (d.get("token"), committed.and_then(|c| c.get(tick.to_string()))) {
                    (Some(token), Some(committed)) => token == committed,
                    // Written before snapshots carried tokens.
                    (None, _) => true,
                    (Some(_), None) => false,
                }
            })
            .collect())
    }

    /// The zone's newest token, as the fence document holds it.
    async fn token(&self, zone: u32) -> StoreResult<u64> {
        let fence = self.fences.find_one(doc! { "_id": i64::from(zone) }).await.map_err(err)?;
        Ok(fence.and_then(|f| f.get_i64("token").ok()).unwrap_or(0) as u64)
    }

    /// Forgets the commits of `ticks` (their documents are deleted).
    async fn uncommit(&self, zone: u32, ticks: impl Iterator<Item = u64>) -> StoreResult<()> {
        let unset: Document = ticks.map(|t| (format!("committed.{t}"), Bson::String(String::new()))).collect();
        if !unset.is_empty() {
            self.fences.update_one(doc! { "_id": i64::from(zone) }, doc! { "$unset": unset }).await.map_err(err)?;
        }
        Ok(())
    }
}

impl ColdSnapshots for MongoColdSnapshots {
    fn put(&self, snapshot: StoredSnapshot, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            self.ensure_index().await;
            let m = snapshot.meta;
            let (zone, token) = (i64::from(m.zone), fence.0 as i64);
            let document = doc! {
                "zone": zone,
                "tick": m.tick as i64,
                "taken_at_ms": m.taken_at_ms as i64,
                "token": token,
                "data": Binary { subtype: BinarySubtype::Generic, bytes: snapshot.bytes },
            };
            bounded(BACKEND, async { self.collection.insert_one(document).await.map(|_| ()).map_err(err) }).await?;
            // The commit: refused (no document matches, and the upsert's
            // insert collides with the existing one) once a newer token is there.
            let commit = doc! { "$set": { "token": token, format!("committed.{}", m.tick): token } };
            let committed = bounded(BACKEND, async {
                match self
                    .fences
                    .update_one(doc! { "_id": zone, "token": { "$lte": token } }, commit)
                    .upsert(true)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if is_duplicate_key(&e) => Ok(false),
                    Err(e) => Err(err(e)),
                }
            })
            .await?;
            if committed {
                return Ok(());
            }
            let newer = bounded(BACKEND, self.token(m.zone)).await?;
            let mine = doc! { "zone": zone, "tick": m.tick as i64, "token": token };
            if let Err(e) = bounded(BACKEND, async { self.collection.delete_many(mine).await.map_err(err) }).await {
                tracing::debug!(zone, error = %e, "a refused cold snapshot stays, uncommitted, until pruned");
            }
            Err(StoreError::Fenced { zone: m.zone, mine: fence.0, newer })
        }
        .boxed()
    }

    fn fence(&self, zone: u32, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let raise = doc! { "$max": { "token": fence.0 as i64 } };
            bounded(BACKEND, async {
                self.fences.update_one(doc! { "_id": i64::from(zone) }, raise).upsert(true).await.map_err(err)
            })
            .await
            .map(|_| ())
        }
        .boxed()
    }

    fn list(&self, zone: u32) -> BoxFuture<'_, StoreResult<Vec<SnapshotMeta>>> {
        async move {
            let docs = bounded(BACKEND, self.committed(zone, Document::new(), false)).await?;
            let mut metas = docs.iter().map(Self::meta_of).collect::<StoreResult<Vec<_>>>()?;
            metas.sort_by(|a, b| b.tick.cmp(&a.tick).then(b.taken_at_ms.cmp(&a.taken_at_ms)));
            metas.dedup_by_key(|m| m.tick);
            Ok(metas)
        }
        .boxed()
    }

    fn get(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<Option<StoredSnapshot>>> {
        async move {
            let found = bounded(BACKEND, self.committed(zone, doc! { "tick": tick as i64 }, true)).await?;
            // Several writes of one tick are the same state; take the latest written.
            let Some(doc) = found.into_iter().max_by_key(|d| Self::meta_of(d).map_or(0, |m| m.taken_at_ms)) else {
                return Ok(None);
            };
            let meta = Self::meta_of(&doc)?;
            match doc.get("data") {
                Some(Bson::Binary(b)) => Ok(Some(StoredSnapshot { meta, bytes: b.bytes.clone() })),
                _ => Err(StoreError::Corrupt(format!("cold snapshot {zone}@{tick} has no data"))),
            }
        }
        .boxed()
    }

    fn prune(&self, zone: u32, keep: usize) -> BoxFuture<'_, StoreResult<usize>> {
        async move {
            let metas = self.list(zone).await?;
            if metas.len() <= keep {
                return Ok(0);
            }
            let (filter, oldest_kept) = match keep.checked_sub(1).and_then(|i| metas.get(i)) {
                Some(oldest) => (doc! { "zone": i64::from(zone), "tick": { "$lt": oldest.tick as i64 } }, oldest.tick),
                None => (doc! { "zone": i64::from(zone) }, u64::MAX),
            };
            let deleted = self.delete(filter).await?;
            let gone = metas.iter().map(|m| m.tick).filter(|t| *t < oldest_kept);
            bounded(BACKEND, self.uncommit(zone, gone)).await?;
            Ok(deleted)
        }
        .boxed()
    }

    fn delete_after(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<usize>> {
        async move {
            let metas = self.list(zone).await?;
            let deleted = self.delete(doc! { "zone": i64::from(zone), "tick": { "$gt": tick as i64 } }).await?;
            bounded(BACKEND, self.uncommit(zone, metas.iter().map(|m| m.tick).filter(|t| *t > tick))).await?;
            Ok(deleted)
        }
        .boxed()
    }
}

/// A write that collided with a document's unique `_id`.
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => e.to_string().contains("E11000"),
    }
}

impl MongoColdSnapshots {
    async fn delete(&self, filter: Document) -> StoreResult<usize> {
        let deleted =
            bounded(BACKEND, async { self.collection.delete_many(filter).await.map(|r| r.deleted_count).map_err(err) })
                .await?;
        Ok(deleted as usize)
    }
}
