//! Embedded implementations: plain files under a data directory. Writes go
//! to a temporary file that is synced and renamed, so a crash leaves either
//! the old file or the new one, never half of one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::lease::{self, Lease, Leases};
use crate::{
    ColdSnapshots, Fence, HotSnapshots, Journal, JournalEntry, ResumeSession, Sessions, SnapshotMeta, StoreError,
    StoreResult, StoredSnapshot,
};

const BACKEND: &str = "files";
/// How long a lease or a fenced write waits for a zone's lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend { backend: BACKEND, message: e.to_string() }
}

/// A text file's contents, or `None` when there is no such file.
fn read_text(path: &Path) -> StoreResult<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StoreResult<T> + Send + 'static) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend { backend: BACKEND, message: format!("file task failed: {e}") })?
}

/// Makes a directory's entries durable: a file created or renamed in it
/// is still there after a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: a temporary file, fsynced, renamed
/// over it, the directory fsynced. A failure (a full disk) leaves the old file.
pub(crate) fn write_atomic_io(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other(format!("{} has no parent", path.display())))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_data()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// [`write_atomic_io`], creating the directory first.
fn write_atomic(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    let dir = path.parent().ok_or_else(|| StoreError::Invalid(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir).map_err(io)?;
    write_atomic_io(path, bytes).map_err(io)
}

/// Snapshots of one kind, one file per snapshot: `<root>/zone-<id>/<tick>-<ms>.snap`.
#[derive(Debug, Clone)]
struct SnapshotDir {
    root: PathBuf,
}

impl SnapshotDir {
    fn zone_dir(&self, zone: u32) -> PathBuf {
        self.root.join(format!("zone-{zone}"))
    }

    fn path(&self, meta: &SnapshotMeta) -> PathBuf {
        self.zone_dir(meta.zone).join(format!("{:020}-{}.snap", meta.tick, meta.taken_at_ms))
    }

    /// Newest first.
    fn list(&self, zone: u32) -> StoreResult<Vec<SnapshotMeta>> {
        let entries = match std::fs::read_dir(self.zone_dir(zone)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut metas: Vec<SnapshotMeta> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (tick, ms) = name.strip_suffix(".snap")?.split_once('-')?;
                Some(SnapshotMeta { zone, tick: tick.parse().ok()?, taken_at_ms: ms.parse().ok()? })
            })
            .collect();
        metas.sort_by_key(|m| std::cmp::Reverse(m.tick));
        Ok(metas)
    }

    fn read(&self, meta: SnapshotMeta) -> StoreResult<StoredSnapshot> {
        Ok(StoredSnapshot { meta, bytes: std::fs::read(self.path(&meta)).map_err(io)? })
    }

    fn write(&self, snapshot: &StoredSnapshot) -> StoreResult<()> {
        write_atomic(&self.path(&snapshot.meta), &snapshot.bytes)
    }

    /// Deletes all but the `keep` newest.
    fn prune(&self, zone: u32, keep: usize) -> StoreResult<usize> {
        self.remove(self.list(zone)?.into_iter().skip(keep).collect())
    }

    fn remove(&self, metas: Vec<SnapshotMeta>) -> StoreResult<usize> {
        for meta in &metas {
            std::fs::remove_file(self.path(meta)).map_err(io)?;
        }
        Ok(metas.len())
    }
}

/// Zone leases in files under `<data dir>/leases/`, for servers on one
/// machine sharing a data directory: `zone-<id>.lease` (`<token> <owner>
/// <expiry, Unix ms>`) and `zone-<id>.fence` (the last token granted),
/// changed under an exclusive lock on `zone-<id>.lock`. A fenced write holds
/// a shared lock on it from its check to its end, so no lease is granted in
/// between. Expiry is by this machine's wall clock, which every holder shares.
#[derive(Debug, Clone)]
pub struct FileLeases {
    dir: PathBuf,
}

impl FileLeases {
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("leases") }
    }

    fn path(&self, zone: u32, kind: &str) -> PathBuf {
        self.dir.join(format!("zone-{zone}.{kind}"))
    }

    /// The zone's lock, held until the file is dropped. Waited for at most
    /// [`LOCK_WAIT`]: a holder paused or stalled mid-write (a stopped
    /// process keeps its locks) makes the store unavailable for this zone
    /// until it goes on, instead of blocking every other server forever.
    fn lock(&self, zone: u32, exclusive: bool) -> StoreResult<std::fs::File> {
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path(zone, "lock"))
            .map_err(io)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match if exclusive { file.try_lock() } else { file.try_lock_shared() } {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Unavailable {
                        backend: BACKEND,
                        message: format!(
                            "zone {zone}'s lease lock is still held after {LOCK_WAIT:?} \
                             (another process paused or stalled in the middle of a write)"
                        ),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }

    fn last_token(&self, zone: u32) -> StoreResult<u64> {
        let Some(text) = read_text(&self.path(zone, "fence"))? else { return Ok(0) };
        text.trim().parse().map_err(|_| StoreError::Corrupt(format!("fence of zone {zone}: {text:?}")))
    }

    /// The live lease: owner, token and expiry; `None` if there is none or it expired.
    fn live(&self, zone: u32) -> StoreResult<Option<(String, u64, u64)>> {
        let Some(text) = read_text(&self.path(zone, "lease"))? else { return Ok(None) };
        let (held, expires) = text.trim().rsplit_once(' ').unwrap_or_default();
        let expires: u64 = expires.parse().map_err(|_| StoreError::Corrupt(format!("lease of zone {zone}")))?;
        let (owner, token) = lease::decode(held)?;
        Ok((expires > crate::unix_ms()).then_some((owner, token, expires)))
    }

    /// Whether `held` is still the zone's live lease.
    fn is_current(&self, held: &Lease) -> StoreResult<bool> {
        Ok(self.live(held.zone)?.is_some_and(|(owner, token, _)| owner == held.owner && token == held.token))
    }

    fn write_lease(&self, zone: u32, token: u64, owner: &str, ttl_ms: u64) -> StoreResult<()> {
        let expires = crate::unix_ms() + ttl_ms;
        write_atomic(&self.path(zone, "lease"), format!("{} {expires}", lease::encode(token, owner)).as_bytes())
    }

    /// Under a shared lock: refuses a write for `zone` carrying `fence` once
    /// a newer lease was granted; the lock is held while the write goes on.
    fn admit(&self, zone: u32, fence: Fence) -> StoreResult<std::fs::File> {
        let guard = self.lock(zone, false)?;
        let newer = self.last_token(zone)?;
        if newer > fence.0 {
            return Err(StoreError::Fenced { zone, mine: fence.0, newer });
        }
        Ok(guard)
    }
}

impl Leases for FileLeases {
    fn acquire<'a>(&'a self, zone: u32, owner: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<Option<Lease>>> {
        let (leases, owner) = (self.clone(), owner.to_owned());
        async move {
            lease::validate_owner(&owner)?;
            let ms = lease::validate_ttl(ttl)?;
            blocking(move || {
                let _guard = leases.lock(zone, true)?;
                if leases.live(zone)?.is_some_and(|(holder, _, _)| holder != owner) {
                    return Ok(None);
                }
                let token = (leases.last_token(zone)? + 1).max(crate::unix_ms());
                write_atomic(&leases.path(zone, "fence"), token.to_string().as_bytes())?;
                leases.write_lease(zone, token, &owner, ms)?;
                Ok(Some(Lease { zone, owner, token }))
            })
            .await
        }
        .boxed()
    }

    fn renew<'a>(&'a self, held: &'a Lease, ttl: Duration) -> BoxFuture<'a, StoreResult<Option<Lease>>> {
        let (leases, held) = (self.clone(), held.clone());
        async move {
            let ms = lease::validate_ttl(ttl)?;
            blocking(move || {
                let _guard = leases.lock(held.zone, true)?;
                let still_held = match leases.live(held.zone)? {
                    Some((owner, token, _)) => owner == held.owner && token == held.token,
                    // Expired or released: taken back only if nobody was granted it since.
                    None => leases.last_token(held.zone)? == held.token,
                };
                if !still_held {
                    return Ok(None);
                }
                leases.write_lease(held.zone, held.token, &held.owner, ms)?;
                Ok(Some(held))
            })
            .await
        }
        .boxed()
    }

    fn release<'a>(&'a self, held: &'a Lease) -> BoxFuture<'a, StoreResult<()>> {
        let (leases, held) = (self.clone(), held.clone());
        blocking(move || {
            let _guard = leases.lock(held.zone, true)?;
            if leases.is_current(&held)? {
                std::fs::remove_file(leases.path(held.zone, "lease")).map_err(io)?;
            }
            Ok(())
        })
        .boxed()
    }

    fn holder(&self, zone: u32) -> BoxFuture<'_, StoreResult<Option<(String, u64)>>> {
        let leases = self.clone();
        blocking(move || Ok(leases.live(zone)?.map(|(owner, token, _)| (owner, token)))).boxed()
    }
}

#[derive(Debug, Clone)]
pub struct FileHotSnapshots {
    dir: SnapshotDir,
    leases: FileLeases,
}

impl FileHotSnapshots {
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: SnapshotDir { root: data_dir.join("hot") }, leases: FileLeases::new(data_dir) }
    }
}

impl HotSnapshots for FileHotSnapshots {
    fn put(&self, snapshot: StoredSnapshot, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        let (dir, leases) = (self.dir.clone(), self.leases.clone());
        blocking(move || {
            let _admitted = leases.admit(snapshot.meta.zone, fence)?;
            dir.write(&snapshot)?;
            dir.prune(snapshot.meta.zone, 2).map(|_| ())
        })
        .boxed()
    }

    fn recent(&self, zone: u32) -> BoxFuture<'_, StoreResult<Vec<StoredSnapshot>>> {
        let dir = self.dir.clone();
        blocking(move || dir.list(zone)?.into_iter().take(2).map(|m| dir.read(m)).collect()).boxed()
    }

    fn clear(&self, zone: u32) -> BoxFuture<'_, StoreResult<()>> {
        let dir = self.dir.clone();
        blocking(move || dir.prune(zone, 0).map(|_| ())).boxed()
    }
}

/// Cold snapshots in files, fenced like the hot ones by the zone's lease files.
#[derive(Debug, Clone)]
pub struct FileColdSnapshots {
    dir: SnapshotDir,
    leases: FileLeases,
}

impl FileColdSnapshots {
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: SnapshotDir { root: data_dir.join("cold") }, leases: FileLeases::new(data_dir) }
    }

    /// The zones' archived history ([`crate::history`]), under `history/`.
    pub fn history(data_dir: &Path) -> Self {
        Self { dir: SnapshotDir { root: data_dir.join("history") }, leases: FileLeases::new(data_dir) }
    }
}

impl ColdSnapshots for FileColdSnapshots {
    fn put(&self, snapshot: StoredSnapshot, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        let (dir, leases) = (self.dir.clone(), self.leases.clone());
        blocking(move || {
            let _admitted = leases.admit(snapshot.meta.zone, fence)?;
            dir.write(&snapshot)
        })
        .boxed()
    }

    fn fence(&self, _zone: u32, _fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        // The lease files' fence is this store's: taking the lease raised it.
        async { Ok(()) }.boxed()
    }

    fn list(&self, zone: u32) -> BoxFuture<'_, StoreResult<Vec<SnapshotMeta>>> {
        let dir = self.dir.clone();
        blocking(move || dir.list(zone)).boxed()
    }

    fn get(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<Option<StoredSnapshot>>> {
        let dir = self.dir.clone();
        blocking(move || match dir.list(zone)?.into_iter().find(|m| m.tick == tick) {
            Some(meta) => dir.read(meta).map(Some),
            None => Ok(None),
        })
        .boxed()
    }

    fn prune(&self, zone: u32, keep: usize) -> BoxFuture<'_, StoreResult<usize>> {
        let dir = self.dir.clone();
        blocking(move || dir.prune(zone, keep)).boxed()
    }

    fn delete_after(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<usize>> {
        let dir = self.dir.clone();
        blocking(move || dir.remove(dir.list(zone)?.into_iter().filter(|m| m.tick > tick).collect())).boxed()
    }
}

/// One append-only file per zone of records `tick u64 | len u32 | crc32 u32 | batch`.
/// An append is all or nothing: a failed write (a full disk) is cut back off.
/// A torn record at the end (a crash mid-write) ends the readable journal
/// and is cut off before the next append, which would otherwise follow it unread.
#[derive(Debug, Clone)]
pub struct FileJournal {
    root: PathBuf,
    leases: FileLeases,
    /// Last stored tick per zone, loaded on first use; the lock also
    /// serialises every file operation.
    last_tick: Arc<std::sync::Mutex<HashMap<u32, u64>>>,
}

const RECORD_HEADER: usize = 16;

impl FileJournal {
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("journal"), leases: FileLeases::new(data_dir), last_tick: Arc::default() }
    }

    fn path(root: &Path, zone: u32) -> PathBuf {
        root.join(format!("zone-{zone}.log"))
    }

    fn read_all(root: &Path, zone: u32) -> StoreResult<Vec<JournalEntry>> {
        Self::read_whole(root, zone).map(|(entries, _)| entries)
    }

    /// The readable entries and the length of the file they span.
    fn read_whole(root: &Path, zone: u32) -> StoreResult<(Vec<JournalEntry>, u64)> {
        let bytes = match std::fs::read(Self::path(root, zone)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(io(e)),
        };
        let mut out = Vec::new();
        let mut rest = bytes.as_slice();
        while rest.len() >= RECORD_HEADER {
            let tick = u64::from_le_bytes(rest[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(rest[8..12].try_into().unwrap_or_default()) as usize;
            let crc = u32::from_le_bytes(rest[12..16].try_into().unwrap_or_default());
            let Some(batch) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else { break };
            if crc32fast::hash(batch) != crc {
                break;
            }
            out.push(JournalEntry { tick, batch: batch.to_vec() });
            rest = &rest[RECORD_HEADER + len..];
        }
        if !rest.is_empty() {
            tracing::warn!(zone, bytes = rest.len(), "journal ends with a torn or corrupt record; ignoring its tail");
        }
        Ok((out, (bytes.len() - rest.len()) as u64))
    }

    fn encode(entries: &[JournalEntry]) -> Vec<u8> {
        let mut buf = Vec::new();
        for e in entries {
            buf.extend_from_slice(&e.tick.to_le_bytes());
            buf.extend_from_slice(&(e.batch.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&e.batch).to_le_bytes());
            buf.extend_from_slice(&e.batch);
        }
        buf
    }

    /// Runs `f` with the zone's last stored tick, under the journal lock.
    async fn with_zone<T: Send + 'static>(
        &self,
        zone: u32,
        f: impl FnOnce(&Path, &mut u64) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (root, cache) = (self.root.clone(), self.last_tick.clone());
        blocking(move || {
            let mut cache = cache.lock().map_err(|_| StoreError::Invalid("journal lock poisoned".into()))?;
            let last = match cache.entry(zone) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let (entries, readable) = Self::read_whole(&root, zone)?;
                    let path = Self::path(&root, zone);
                    if std::fs::metadata(&path).is_ok_and(|m| m.len() > readable) {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_len(readable))
                            .map_err(io)?;
                    }
                    e.insert(entries.last().map_or(0, |e| e.tick))
                }
            };
            let result = f(&root, last);
            if result.is_err() {
                // What is on disk is read again next time (a torn tail cut off).
                cache.remove(&zone);
            }
            result
        })
        .await
    }
}

impl Journal for FileJournal {
    fn append(&self, zone: u32, entries: Vec<JournalEntry>, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        let leases = self.leases.clone();
        self.with_zone(zone, move |root, last| {
            let _admitted = leases.admit(zone, fence)?;
            let mut prev = *last;
            for e in &entries {
                if e.tick <= prev {
                    return Err(StoreError::Invalid(format!("journal tick {} is not above {prev}", e.tick)));
                }
                prev = e.tick;
            }
            std::fs::create_dir_all(root).map_err(io)?;
            let mut file =
                std::fs::OpenOptions::new().create(true).append(true).open(Self::path(root, zone)).map_err(io)?;
            let before = file.metadata().map_err(io)?.len();
            if let Err(e) = file.write_all(&Self::encode(&entries)).and_then(|()| file.sync_data()) {
                // Were this to fail too, the failed call makes the next one load the journal again and cut it.
                if let Err(cut) = file.set_len(before) {
                    tracing::error!(zone, error = %cut, "cannot cut a failed journal append off yet");
                }
                return Err(io(e));
            }
            if before == 0 {
                sync_dir(root).map_err(io)?;
            }
            *last = prev;
            Ok(())
        })
        .boxed()
    }

    fn read_after(&self, zone: u32, after: u64) -> BoxFuture<'_, StoreResult<Vec<JournalEntry>>> {
        self.with_zone(zone, move |root, _| {
            Ok(Self::read_all(root, zone)?.into_iter().filter(|e| e.tick > after).collect())
        })
        .boxed()
    }

    fn trim_through(&self, zone: u32, through: u64) -> BoxFuture<'_, StoreResult<()>> {
        self.with_zone(zone, move |root, _| {
            let all = Self::read_all(root, zone)?;
            let keep: Vec<JournalEntry> = all.iter().filter(|e| e.tick > through).cloned().collect();
            if keep.len() != all.len() {
                write_atomic(&Self::path(root, zone), &Self::encode(&keep))?;
            }
            Ok(())
        })
        .boxed()
    }

    fn reset(&self, zone: u32, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        let leases = self.leases.clone();
        self.with_zone(zone, move |root, last| {
            let _admitted = leases.admit(zone, fence)?;
            match std::fs::remove_file(Self::path(root, zone)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
            *last = 0;
            Ok(())
        })
        .boxed()
    }

    fn len(&self, zone: u32) -> BoxFuture<'_, StoreResult<u64>> {
        self.with_zone(zone, move |root, _| Ok(Self::read_all(root, zone)?.len() as u64)).boxed()
    }
}

/// One small file per player's resume session (`sessions/player-<id>`).
#[derive(Debug, Clone)]
pub struct FileSessions {
    root: PathBuf,
}

impl FileSessions {
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("sessions") }
    }
}

impl Sessions for FileSessions {
    fn put(&self, session: ResumeSession) -> BoxFuture<'_, StoreResult<()>> {
        let root = self.root.clone();
        async move {
            if !session.is_valid() {
                return Err(StoreError::Invalid("malformed resume session".into()));
            }
            let path = root.join(format!("player-{}", session.player_id));
            blocking(move || write_atomic(&path, session.to_text().as_bytes())).await
        }
        .boxed()
    }

    fn take(&self, player_id: u64, secret_hash: &str) -> BoxFuture<'_, StoreResult<Option<ResumeSession>>> {
        let (path, hash) = (self.root.join(format!("player-{player_id}")), secret_hash.to_owned());
        async move {
            blocking(move || {
                let Some(text) = read_text(&path)? else { return Ok(None) };
                let session = ResumeSession::from_text(player_id, &text)
                    .ok_or_else(|| StoreError::Corrupt(format!("session file of player {player_id}")))?;
                if session.secret_hash != hash {
                    return Ok(None);
                }
                // Whoever removes the file took the token: a second taker finds it gone.
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(Some(session).filter(|s| s.expires_at_ms > crate::unix_ms())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io(e)),
                }
            })
            .await
        }
        .boxed()
    }
}
