//! Cold snapshots on MongoDB through the official driver. Insert-only
//! documents; the newest is chosen by tick in this process (never by the
//! server's sort, which some wire-compatible servers silently ignore); old
//! ones are deleted by filter. Targets MongoDB 6.0 and later; tested against
//! SecantusDB, a MongoDB-wire-compatible server (see docs/storage.md).

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryStreamExt};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, Document};
use mongodb::options::{ClientOptions, CollectionOptions, IndexOptions, WriteConcern};
use mongodb::{Collection, IndexModel};
use tokio::sync::OnceCell;

use crate::{bounded, ColdSnapshots, SnapshotMeta, StoreError, StoreResult, StoredSnapshot, CALL_TIMEOUT};

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
    index: std::sync::Arc<OnceCell<()>>,
}

impl MongoColdSnapshots {
    /// `uri` like `mongodb://127.0.0.1:27017/?directConnection=true`; no
    /// connection is made until the first call.
    pub async fn new(uri: &str, database: &str) -> StoreResult<Self> {
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
        let collection = client.database(database).collection_with_options::<Document>("cold_snapshots", journaled);
        Ok(Self { collection, index: Default::default() })
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

    /// Every snapshot's metadata for `zone`, without its data (a listing
    /// must not download every blob).
    async fn metas(&self, zone: u32) -> StoreResult<Vec<Document>> {
        let cursor = self
            .collection
            .find(doc! { "zone": i64::from(zone) })
            .projection(doc! { "zone": 1, "tick": 1, "taken_at_ms": 1 })
            .await
            .map_err(err)?;
        cursor.try_collect().await.map_err(err)
    }
}

impl ColdSnapshots for MongoColdSnapshots {
    fn put(&self, snapshot: StoredSnapshot) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            self.ensure_index().await;
            let m = snapshot.meta;
            let document = doc! {
                "zone": i64::from(m.zone),
                "tick": m.tick as i64,
                "taken_at_ms": m.taken_at_ms as i64,
                "data": Binary { subtype: BinarySubtype::Generic, bytes: snapshot.bytes },
            };
            bounded(BACKEND, async { self.collection.insert_one(document).await.map(|_| ()).map_err(err) }).await
        }
        .boxed()
    }

    fn list(&self, zone: u32) -> BoxFuture<'_, StoreResult<Vec<SnapshotMeta>>> {
        async move {
            let docs = bounded(BACKEND, self.metas(zone)).await?;
            let mut metas = docs.iter().map(Self::meta_of).collect::<StoreResult<Vec<_>>>()?;
            metas.sort_by(|a, b| b.tick.cmp(&a.tick).then(b.taken_at_ms.cmp(&a.taken_at_ms)));
            Ok(metas)
        }
        .boxed()
    }

    fn get(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<Option<StoredSnapshot>>> {
        async move {
            let found: Vec<Document> = bounded(BACKEND, async {
                let cursor =
                    self.collection.find(doc! { "zone": i64::from(zone), "tick": tick as i64 }).await.map_err(err)?;
                cursor.try_collect().await.map_err(err)
            })
            .await?;
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
            let filter = match keep.checked_sub(1).and_then(|i| metas.get(i)) {
                Some(oldest_kept) => doc! { "zone": i64::from(zone), "tick": { "$lt": oldest_kept.tick as i64 } },
                None => doc! { "zone": i64::from(zone) },
            };
            self.delete(filter).await
        }
        .boxed()
    }

    fn delete_after(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<usize>> {
        self.delete(doc! { "zone": i64::from(zone), "tick": { "$gt": tick as i64 } }).boxed()
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
