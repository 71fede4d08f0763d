//! Several conductors on one database: who owns which node, and how nodes move when a
//! conductor joins, leaves or dies.
//!
//! The owner of a node is given by the hash ring ([`crate::ring::Ring`]) of the live
//! conductors: those whose heartbeat is younger than `[conductor] heartbeat_timeout`, and
//! always this one unless it is leaving. Any conductor renders any node's script from the
//! shared database; ownership decides who does the node's work:
//!
//! - **the static mirror**: only the owner keeps the node's files in its `http_root`;
//! - **preparations** that fetch images ([`Pending`]): the owner fetches them into its cache
//!   and makes the request the node's target, naming its own `http_url` in the snapshot;
//! - **adoption** (cache mode): a node whose cached images another conductor holds is
//!   fetched into the owner's cache, and only then does the snapshot name the owner. Until
//!   then scripts keep the old URLs, so a conductor that leaves cleanly serves until the
//!   others are ready ([`Service::drain`]).
//!
//! In swift mode taking a node over is writing its mirror files: nothing is downloaded and
//! the database is not written.
//!
//! A conductor reserves a node (Ironic's `reservation` column) for the time it prepares or
//! adopts it, so two conductors never do that work for one node at once. A reservation of a
//! conductor that is no longer alive is free, and is cleared at the next pass.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{InFlight, Service, ServiceError, blocking};
use crate::cache::Progress;
use crate::node::{BootRecord, Mac, Node, Pending, PreparedBoot, State, Target};
use crate::ring::Ring;
use crate::store::StoreError;

/// How many nodes one conductor prepares or adopts at once.
const WORKERS: usize = 16;

/// How long a conductor keeps serving a node's images after its scripts stopped naming
/// them: a machine that got a script just before the handover still fetches its kernel.
pub const HANDOVER_GRACE: Duration = Duration::from_secs(5);

/// This conductor's view of the ring and the work it is doing.
#[derive(Debug)]
pub(super) struct Takeover {
    host: String,
    ring: RwLock<View>,
    /// Set by [`Service::leave`]: this conductor owns nothing any more.
    leaving: AtomicBool,
    /// The first pass also frees this conductor's own reservations (of a run that died).
    first: AtomicBool,
    /// Nodes whose mirror files this conductor keeps (it owned them at the last look).
    owned: Mutex<HashSet<Uuid>>,
    /// Nodes a worker of this conductor is on.
    working: Mutex<HashSet<Uuid>>,
    /// Nodes whose images go once their grace is over (see [`HANDOVER_GRACE`]).
    releasing: Mutex<std::collections::HashMap<Uuid, Instant>>,
    slots: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug)]
struct View {
    ring: Ring,
    alive: Vec<String>,
}

impl Takeover {
    pub(super) fn new(host: &str) -> Takeover {
        Takeover {
            host: host.to_string(),
            ring: RwLock::new(View {
                ring: Ring::new([host]),
                alive: vec![host.to_string()],
            }),
            leaving: AtomicBool::new(false),
            first: AtomicBool::new(true),
            owned: Mutex::default(),
            working: Mutex::default(),
            releasing: Mutex::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(WORKERS)),
        }
    }

    /// Records whether this conductor keeps `uuid`'s mirror files; returns whether it did.
    pub(super) fn set_owned(&self, uuid: Uuid, owned: bool) -> bool {
        let mut set = self.owned.lock().unwrap_or_else(PoisonError::into_inner);
        if owned {
            !set.insert(uuid)
        } else {
            set.remove(&uuid)
        }
    }
}

/// What one pass of [`Service::rebalance`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rebalance {
    /// The live conductors, this one included (unless it is leaving).
    pub alive: Vec<String>,
    /// Nodes this conductor took (it writes their mirror files now).
    pub gained: usize,
    /// Nodes this conductor gave to others.
    pub lost: usize,
    /// Reservations freed because their conductor is gone.
    pub freed: u64,
    /// Preparations or adoptions started.
    pub started: usize,
    /// How long the pass took.
    pub elapsed_ms: u64,
}

impl Service {
    /// Whether the ring gives node `uuid` to this conductor.
    pub fn is_owner(&self, uuid: &Uuid) -> bool {
        let t = &self.takeover;
        !t.leaving.load(Ordering::Relaxed)
            && t.ring
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .ring
                .owner(uuid)
                == Some(t.host.as_str())
    }

    /// The conductor the ring gives node `uuid` to.
    pub fn owner_of(&self, uuid: &Uuid) -> Option<String> {
        self.takeover
            .ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .ring
            .owner(uuid)
            .map(str::to_string)
    }

    fn alive(&self) -> Vec<String> {
        self.takeover
            .ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .alive
            .clone()
    }

    /// Whether this conductor's cache holds images that `record`'s scripts name.
    fn holds(&self, record: &BootRecord) -> bool {
        record.target != Target::None
            && record.prepared.as_ref().is_some_and(|p| {
                p.needs_fetch() && p.http_url.as_deref() == Some(self.boot.http_url())
            })
    }

    /// Whether `record`'s cached images are held by another conductor (or by a former
    /// `http_url` of this one): the owner must fetch them before its URLs are handed out.
    fn needs_adoption(&self, record: &BootRecord) -> bool {
        record.target != Target::None
            && record.prepared.as_ref().is_some_and(|p| {
                p.needs_fetch()
                    && p.http_url
                        .as_deref()
                        .is_some_and(|u| u != self.boot.http_url())
            })
    }

    /// Schedules the removal of the images of a node this conductor no longer serves (its
    /// snapshot names another conductor's `http_url`, or none of its images are cached),
    /// [`HANDOVER_GRACE`] from now; [`Service::rebalance`] removes them then, if that is
    /// still so.
    pub(super) async fn release_images(&self, record: &BootRecord) {
        if self.boot.cache().is_none() || self.holds(record) {
            return;
        }
        let dir = self.mirror.root().join(record.uuid.to_string());
        let has_images = ["deploy_kernel", "deploy_ramdisk", "kernel", "ramdisk"]
            .iter()
            .any(|l| dir.join(l).exists());
        if has_images {
            self.takeover
                .releasing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(record.uuid)
                .or_insert_with(|| Instant::now() + HANDOVER_GRACE);
        }
    }

    /// Removes the images whose grace is over, of nodes this conductor still does not
    /// serve.
    async fn remove_released(&self) {
        let due: Vec<Uuid> = {
            let mut map = self
                .takeover
                .releasing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let due: Vec<Uuid> = map
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(u, _)| *u)
                .collect();
            for u in &due {
                map.remove(u);
            }
            due
        };
        for uuid in due {
            let held = self
                .store
                .indexed_node(uuid)
                .is_some_and(|(r, _)| self.holds(&r));
            if !held && !self.is_working(uuid) {
                self.boot.remove_images(uuid).await;
            }
        }
    }

    fn is_working(&self, uuid: Uuid) -> bool {
        self.takeover
            .working
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&uuid)
    }

    /// Reads the live conductors, rebuilds the ring, frees reservations of conductors that
    /// are gone, writes the mirror files of the nodes this conductor gained and removes
    /// those of the nodes it lost, and starts the preparations and adoptions that are now
    /// its work. In-memory but for two queries: the conductors and the unfinished
    /// preparations.
    pub async fn rebalance(self: &Arc<Self>) -> Result<Rebalance, ServiceError> {
        let started_at = Instant::now();
        let t = &self.takeover;
        let leaving = t.leaving.load(Ordering::Relaxed);
        let now = self.clock.now_ms();
        let timeout =
            i64::try_from(self.identity.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut alive: Vec<String> = self
            .store
            .conductors()
            .await?
            .into_iter()
            .filter(|r| now.saturating_sub(r.heartbeat_at) <= timeout)
            .map(|r| r.hostname)
            .collect();
        alive.retain(|h| !(leaving && *h == t.host));
        if !leaving && !alive.contains(&t.host) {
            alive.push(t.host.clone());
        }
        alive.sort();
        let ring = Ring::new(&alive);
        let changed = {
            let mut view = t.ring.write().unwrap_or_else(PoisonError::into_inner);
            let changed = view.ring != ring;
            *view = View {
                ring: ring.clone(),
                alive: alive.clone(),
            };
            changed
        };
        if changed {
            tracing::info!(alive = ?alive, "the ring changed");
        }
        self.remove_released().await;
        let first = t.first.swap(false, Ordering::Relaxed);
        let freed = self.store.release_stale(&alive, &t.host, first).await?;
        if freed > 0 {
            tracing::info!(freed, "freed reservations of conductors that are gone");
        }

        let before = t
            .owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut now_owned = HashSet::new();
        let mut gained = Vec::new();
        let mut lost = Vec::new();
        let mut adopt = Vec::new();
        for (record, macs) in self.store.indexed() {
            let uuid = record.uuid;
            let mine = !leaving && ring.owner(&uuid) == Some(t.host.as_str());
            if mine && record.target != Target::None {
                now_owned.insert(uuid);
                if !before.contains(&uuid) {
                    gained.push((record.clone(), macs));
                }
                if self.needs_adoption(&record) {
                    adopt.push(uuid);
                }
            } else if !mine && before.contains(&uuid) {
                lost.push(record);
            }
        }
        *t.owned.lock().unwrap_or_else(PoisonError::into_inner) = now_owned;
        let report_gained = gained.len();
        if !first {
            // at start, the full mirror refresh that follows writes them
            self.write_mirrors(gained).await;
        }
        self.remove_mirrors(lost.iter().map(|r| r.uuid).collect())
            .await;
        for record in &lost {
            self.release_images(record).await;
        }
        let mut started = 0;
        if !leaving {
            for uuid in adopt {
                started += usize::from(self.start_work(uuid));
            }
            for uuid in self.store.pending_nodes().await? {
                if self.is_owner(&uuid) {
                    started += usize::from(self.start_work(uuid));
                }
            }
        }
        let report = Rebalance {
            alive,
            gained: report_gained,
            lost: lost.len(),
            freed,
            started,
            elapsed_ms: u64::try_from(started_at.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        if report.gained > 0 || report.lost > 0 || report.started > 0 {
            tracing::info!(
                gained = report.gained,
                lost = report.lost,
                started = report.started,
                elapsed_ms = report.elapsed_ms,
                "takeover done"
            );
        }
        self.metrics
            .observe_takeover(report.gained, report.lost, started_at.elapsed());
        Ok(report)
    }

    /// A node changed (on another conductor, as announced by the database, or here):
    /// its mirror files follow, and its owner starts the work the change asks for.
    pub async fn node_changed(self: &Arc<Self>, uuid: Uuid) {
        self.sync_mirror(uuid).await;
        if self.is_owner(&uuid) {
            self.start_work(uuid);
        }
    }

    /// Starts the preparation or adoption of a node in the background, unless a worker
    /// of this conductor is already on it. Returns whether one was started.
    pub(super) fn start_work(self: &Arc<Self>, uuid: Uuid) -> bool {
        if self.takeover.leaving.load(Ordering::Relaxed)
            || !self
                .takeover
                .working
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(uuid)
        {
            return false;
        }
        let service = self.clone();
        tokio::spawn(async move {
            let slot = service.takeover.slots.clone().acquire_owned().await;
            if let Err(e) = service.work(uuid).await {
                tracing::warn!(node = %uuid, code = %e.code(), "node work failed: {e}");
            }
            drop(slot);
            service
                .takeover
                .working
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&uuid);
        });
        true
    }

    /// The work a node needs from its owner: finish a stored request, or adopt the images
    /// another conductor holds. Nothing when there is none; the node is reserved while
    /// the work is done.
    async fn work(self: &Arc<Self>, uuid: Uuid) -> Result<(), ServiceError> {
        let node = match self.store.get_node(&uuid.to_string()).await {
            Ok(n) => n,
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let record = BootRecord::of(&node);
        if !self.is_owner(&uuid) || (node.pending.is_none() && !self.needs_adoption(&record)) {
            return Ok(());
        }
        let host = self.takeover.host.clone();
        if !self
            .store
            .reserve(uuid, &host, &self.alive(), self.clock.now_ms())
            .await?
        {
            tracing::info!(node = %uuid, "the node is reserved by another live conductor; leaving it");
            return Ok(());
        }
        let result = match node.pending.clone() {
            Some(pending) => self.finish_pending(uuid, pending).await,
            None => self.adopt(node).await,
        };
        if let Err(e) = self.store.release(uuid, &host).await {
            tracing::warn!(node = %uuid, "cannot release the reservation: {e}");
        }
        result
    }

    /// Fetches a stored request's images into this conductor's cache, then makes it the
    /// node's target (`ready`) or records why not (`failed`), unless a later request
    /// replaced it meanwhile.
    async fn finish_pending(
        self: &Arc<Self>,
        uuid: Uuid,
        pending: Pending,
    ) -> Result<(), ServiceError> {
        let target = pending.target;
        let progress = {
            let mut map = self
                .preparing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match map.get(&uuid).filter(|f| f.id == pending.id) {
                Some(f) => f.progress.clone(),
                None => {
                    // resumed: after a restart, or from a conductor that died
                    let progress = [Progress::new(), Progress::new()];
                    map.insert(
                        uuid,
                        InFlight {
                            id: pending.id,
                            target,
                            progress: progress.clone(),
                        },
                    );
                    progress
                }
            }
        };
        let result = self
            .boot
            .fetch(&pending.prepared, progress, self.clock.now())
            .await;
        let outcome = self
            .commit(uuid, |node| {
                if node.pending.as_ref().map(|p| p.id) != Some(pending.id) {
                    return false;
                }
                node.pending = None;
                match &result {
                    Ok(()) => {
                        node.target = target;
                        node.prepared = Some(self.held_here(pending.prepared.clone()));
                        node.state = State::Ready;
                        node.last_error = None;
                    }
                    Err(e) => {
                        node.state = State::Failed;
                        node.last_error = Some(format!("preparing target {target} failed: {e}"));
                    }
                }
                true
            })
            .await;
        self.forget_prepare(uuid, Some(pending.id));
        match outcome? {
            false => {
                tracing::info!(node = %uuid, %target, "a later request superseded this preparation");
            }
            true => {
                self.count_prepare(target, result.is_ok());
                match &result {
                    Ok(()) => {
                        tracing::info!(node = %uuid, %target, "boot prepared: images in place")
                    }
                    Err(e) => {
                        tracing::warn!(node = %uuid, %target, code = %e.code(), "boot preparation failed: {e}")
                    }
                }
            }
        }
        self.sync_mirror(uuid).await;
        Ok(())
    }

    /// Fetches the images of a node's current snapshot, which another conductor holds,
    /// into this conductor's cache; then the snapshot names this conductor. The node's
    /// scripts name the old holder until then. A failure leaves the node as it is; the
    /// next pass tries again.
    async fn adopt(self: &Arc<Self>, node: Node) -> Result<(), ServiceError> {
        let uuid = node.uuid;
        let Some(prepared) = node.prepared.clone() else {
            return Ok(());
        };
        let progress = [Progress::new(), Progress::new()];
        if let Err(e) = self.boot.fetch(&prepared, progress, self.clock.now()).await {
            tracing::warn!(node = %uuid, code = %e.code(), "cannot take over the node's images; its scripts keep naming {}: {e}", prepared.http_url.as_deref().unwrap_or("?"));
            return Err(e.into());
        }
        let same = |p: &PreparedBoot| PreparedBoot {
            http_url: None,
            ..p.clone()
        };
        let adopted = self
            .commit(uuid, |n| {
                let unchanged = n.pending.is_none()
                    && n.target == node.target
                    && n.prepared.as_ref().map(same) == Some(same(&prepared));
                if unchanged {
                    n.prepared = Some(self.held_here(prepared.clone()));
                }
                unchanged
            })
            .await?;
        if adopted {
            tracing::info!(node = %uuid, "took over the node's cached images");
        }
        self.sync_mirror(uuid).await;
        Ok(())
    }

    /// A snapshot whose cached images this conductor holds.
    fn held_here(&self, mut prepared: PreparedBoot) -> PreparedBoot {
        prepared.http_url = prepared
            .needs_fetch()
            .then(|| self.boot.http_url().to_string());
        prepared
    }

    /// Applies `change` to the stored node and writes it, again on a concurrent write;
    /// `change` returns `false` to give up. Returns whether the change was written. A
    /// leaving conductor writes nothing.
    async fn commit(
        &self,
        uuid: Uuid,
        change: impl Fn(&mut Node) -> bool,
    ) -> Result<bool, ServiceError> {
        for _ in 0..5 {
            if self.takeover.leaving.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let mut node = match self.store.get_node(&uuid.to_string()).await {
                Ok(n) => n,
                Err(StoreError::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            if !change(&mut node) {
                return Ok(false);
            }
            match self.store.update_node(&node).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(uuid).into())
    }

    /// Writes the mirror files of many nodes, rendering and writing on every core.
    pub(super) async fn write_mirrors(self: &Arc<Self>, items: Vec<(Arc<BootRecord>, Vec<Mac>)>) {
        let now = self.clock.now();
        self.on_every_core(items, "write", move |service, (record, macs)| {
            let result = match macs.first() {
                Some(mac) if record.target != Target::None => {
                    match service.boot.render(&record, mac, "${mac:hexhyp}", now) {
                        Ok(Some(r)) => service.mirror.write_node(record.uuid, &macs, &r.script),
                        Ok(None) => service.mirror.remove_node(record.uuid),
                        Err(e) => {
                            tracing::warn!(node = %record.uuid, "mirror config not rendered: {e}");
                            return None;
                        }
                    }
                }
                _ => service.mirror.remove_node(record.uuid),
            };
            Some((record.uuid, result))
        })
        .await
    }

    /// Removes the mirror files of many nodes, on every core.
    async fn remove_mirrors(self: &Arc<Self>, uuids: Vec<Uuid>) {
        self.on_every_core(uuids, "remove", |service, uuid| {
            Some((uuid, service.mirror.remove_node(uuid)))
        })
        .await
    }

    /// Runs `job` on every item, in one blocking task per core; counts and logs what it
    /// did to the static mirror (`None`: nothing).
    async fn on_every_core<T: Send + 'static>(
        self: &Arc<Self>,
        mut items: Vec<T>,
        what: &'static str,
        job: impl Fn(&Service, T) -> Option<(Uuid, std::io::Result<()>)> + Send + Sync + Clone + 'static,
    ) {
        if items.is_empty() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let per = items.len().div_ceil(cores).max(64);
        let mut chunks = Vec::new();
        while !items.is_empty() {
            let rest = items.split_off(per.min(items.len()));
            chunks.push(std::mem::replace(&mut items, rest));
        }
        let jobs = chunks.into_iter().map(|chunk| {
            let (service, job) = (self.clone(), job.clone());
            blocking(move || {
                let mut errors = Vec::new();
                let mut ok = 0u64;
                for item in chunk {
                    match job(&service, item) {
                        Some((_, Ok(()))) => ok += 1,
                        Some((uuid, Err(e))) => errors.push((uuid, e)),
                        None => {}
                    }
                }
                Ok((ok, errors))
            })
        });
        for outcome in futures_util::future::join_all(jobs).await {
            match outcome {
                Ok((ok, errors)) => {
                    self.metrics.count_mirror_writes(ok, errors.len() as u64);
                    for (uuid, e) in errors {
                        tracing::error!(node = %uuid, "cannot {what} the static mirror files in {}: {e}", self.mirror.root().display());
                    }
                }
                Err(e) => tracing::error!("cannot {what} static mirror files: {e}"),
            }
        }
    }

    /// A clean stop, first half: this conductor leaves the ring (the others take its
    /// nodes at once) and stops starting work. It keeps serving: see [`Service::drain`].
    pub async fn leave(self: &Arc<Self>) -> Result<(), ServiceError> {
        self.takeover.leaving.store(true, Ordering::Relaxed);
        self.unregister().await?;
        self.rebalance().await?;
        Ok(())
    }

    /// A clean stop, second half: waits until no node's scripts name this conductor's
    /// cached images (the new owners adopted them), at most `limit`. Returns how many
    /// still do.
    /// With no other live conductor there is nobody to hand over to: it returns at once.
    pub async fn drain(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut handed_over = false;
        loop {
            // taken before the count, so a change right after it is not missed
            let changed = self.store.index_changed();
            let held = self
                .store
                .indexed()
                .iter()
                .filter(|(r, _)| self.holds(r))
                .count();
            if !self.others_alive().await {
                if held > 0 {
                    tracing::info!(
                        nodes = held,
                        "no other conductor is alive to take over the images this one serves; stopping"
                    );
                }
                return held;
            }
            if held == 0 || Instant::now() >= deadline {
                if held > 0 {
                    tracing::warn!(
                        nodes = held,
                        "stopping while other conductors still fetch images this one serves"
                    );
                } else if handed_over {
                    // machines that got a script naming this conductor just before the
                    // last handover still fetch their images
                    let grace =
                        HANDOVER_GRACE.min(deadline.saturating_duration_since(Instant::now()));
                    tracing::info!(
                        "every image handed over; serving {:.0}s more for scripts already handed out",
                        grace.as_secs_f32()
                    );
                    tokio::time::sleep(grace).await;
                }
                return held;
            }
            if !handed_over {
                tracing::info!(
                    nodes = held,
                    "waiting for other conductors to take over the images this one serves"
                );
            }
            handed_over = true;
            // the new owners' commits reach the index; a conductor dying meanwhile is seen
            // at the next heartbeat interval at the latest
            let recheck = deadline.min(Instant::now() + self.identity.heartbeat_interval);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(recheck.into()) => {}
            }
        }
    }

    /// Whether a conductor other than this one is alive (an error counts as no).
    async fn others_alive(&self) -> bool {
        let now = self.clock.now_ms();
        let timeout =
            i64::try_from(self.identity.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX);
        match self.store.conductors().await {
            Ok(rows) => rows.iter().any(|r| {
                r.hostname != self.takeover.host && now.saturating_sub(r.heartbeat_at) <= timeout
            }),
            Err(e) => {
                tracing::warn!("cannot read the conductors: {e}");
                false
            }
        }
    }

    /// Whether this conductor is leaving (a clean stop began).
    pub fn is_leaving(&self) -> bool {
        self.takeover.leaving.load(Ordering::Relaxed)
    }
}
