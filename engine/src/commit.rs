//! Group commit: how a table write or a consumed source batch becomes
//! durable, and how concurrent ones share their fsyncs.
//!
//! A write (an `INSERT`'s rows, a Kafka epoch's rows and offsets) returns
//! only once its log record is on disk, and readers see its effect on the
//! views only after that: the views' new contents are published after the
//! fsync that covers them. An fsync costs milliseconds; alone, N concurrent
//! `INSERT`s would cost N fsyncs one after the other.
//!
//! So writes are *combined*: a writer puts its [`Write`] in a queue and
//! waits for its answer. If no leader is running, it starts one (a task of
//! its own, so that a client that goes away cannot cancel a group half
//! way). The leader takes the pipelines lock, takes *every* write queued by
//! then, and for each, in order: checks it, moves event time, gives it its
//! log sequence number and pushes its rows through the views (their state
//! changes stay pending). Then it checks each touched view's output of the
//! whole group against its contents, writes every record of the group in
//! one storage commit (each touched row file written and synced once, one
//! sled flush), and only then lets the views take the changes (under the
//! `published` lock) and answers every writer. Writes queued meanwhile form
//! the next group, taken when the leader comes round again.
//!
//! Why a leader that does the work of the group under the lock, rather
//! than writers that each push their rows and then share a sync: operators
//! keep *one level* of pending changes (see `Stateful` in
//! `millrace-dataflow`), committed or rolled back as a whole. A second
//! group's changes stacked on a first whose fsync is still running could
//! neither be committed with it (not durable yet) nor rolled back without
//! it. Here exactly one group is ever pending, held by the one leader:
//! its pending changes are committed together after its fsync, or rolled
//! back together if the fsync fails. Everything else that needs "nothing
//! pending" (checkpoint capture, DDL, `FLUSH`'s checkpoint) takes the same
//! lock, so it runs between groups, when the last group is durable and
//! published. The price is that a group's propagation does not overlap the
//! previous group's fsync; propagation is one thread either way.
//!
//! Failures:
//! - a write that fails before reaching the operators (its table was
//!   dropped, its event time does not decode) fails alone;
//! - a write whose propagation fails (say, a division by zero in a view)
//!   fails alone: the failed propagation has rolled back the views it
//!   touched, which may hold earlier writes of the group too, so the group
//!   is undone and re-run as [the writes before it] and [the writes after
//!   it], which is the order the writes would have had one at a time;
//! - a view output of the group that does not check (an operator bug) is
//!   retried one write per group, so that it fails only its own write;
//! - a failed storage commit fails every write of the group with the same
//!   error and poisons the engine, as PostgreSQL PANICs on a failed fsync:
//!   nothing is retried on a file whose fsync failed, writes are refused
//!   until a restart, reads go on over the last published (durable) views.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::BooleanArray;
use arrow::record_batch::RecordBatch;
use millrace_dataflow::contents::Prepared;
use millrace_dataflow::delta::Delta;
use millrace_dataflow::Watermarks;
use millrace_storage::{Commit, RelationId, SpanPart};
use tokio::sync::oneshot;

use crate::catalog::Relation;
use crate::error::{ErrorKind, SqlError, SqlResult};
use crate::event_time::{Arrival, Progress};
use crate::system_tables::WalStatus;
use crate::{blocking, poisoned_error, Engine, Pipelines, ViewOutputs};

/// Logs the rows of a batch of source `rel` (one that keeps no rows) that
/// `keep` turns away as late, by partition and offset: rows read again
/// from the topic are turned away the same way.
fn log_late_rows(rel: &Relation, keep: &BooleanArray, arrival: &Arrival, commit: &mut Commit) {
    // Most batches have no late row: the popcount spares them the loop.
    if keep.false_count() == 0 || arrival.row_offsets.len() != keep.len() {
        return;
    }
    for (i, kept) in keep.iter().enumerate() {
        if kept != Some(true) {
            let p = arrival.row_partitions.get(i).copied().unwrap_or(0);
            commit.log_late_row(rel.id, p, arrival.row_offsets[i]);
        }
    }
}

/// One writer's change, waiting for a leader.
pub(crate) struct Write {
    rel: Arc<Relation>,
    batches: Vec<RecordBatch>,
    offsets: BTreeMap<i32, i64>,
    arrival: Arrival,
    /// Where the answer goes: the rows kept, once durable.
    reply: oneshot::Sender<SqlResult<usize>>,
}

impl Write {
    fn answer(self, result: SqlResult<usize>) {
        // A writer that went away (its client disconnected) needs no answer.
        let _ = self.reply.send(result);
    }
}

/// The queue of writes and the counts of `millrace_catalog.wal`.
#[derive(Default)]
pub(crate) struct Writers {
    queue: Mutex<Queue>,
    /// Writes made durable by group commits.
    writes: AtomicU64,
    /// Group commits made durable.
    groups: AtomicU64,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Write>,
    /// A leader task is running; it takes what is queued before it ends.
    leading: bool,
}

impl Writers {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is a list; a panicking holder leaves it whole.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `write`; true when the caller must start a leader.
    fn submit(&self, write: Write) -> bool {
        let mut q = self.lock();
        q.waiting.push(write);
        !std::mem::replace(&mut q.leading, true)
    }

    /// Everything queued, or `None` (and the leader retires) when nothing is.
    fn take(&self) -> Option<Vec<Write>> {
        let mut q = self.lock();
        if q.waiting.is_empty() {
            q.leading = false;
            None
        } else {
            Some(std::mem::take(&mut q.waiting))
        }
    }
}

/// Ends a leader: normally through [`Writers::take`]; if the leader
/// panicked, its group's changes may be half applied, so the engine is
/// poisoned, the queued writes are refused, and the next write starts a
/// new leader (which refuses it too).
struct Retire<'a>(&'a Engine);

impl Drop for Retire<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.0.poisoned.store(true, Ordering::SeqCst);
        tracing::error!("the group commit leader panicked, refusing further writes until restart");
        let waiting = {
            let mut q = self.0.writers.lock();
            q.leading = false;
            std::mem::take(&mut q.waiting)
        };
        for w in waiting {
            w.answer(Err(poisoned_error()));
        }
    }
}

/// A write of the group, checked and pushed through the views.
struct Staged {
    write: Write,
    record: Record,
}

/// What staging a write made of it.
struct Record {
    /// Its storage records.
    commit: Commit,
    /// Rows kept (late rows dropped).
    kept: usize,
    /// Rows turned away for being late.
    late: usize,
    /// Its relation's event-time progress before it, to undo it.
    progress_before: Option<Progress>,
}

/// Why a write could not be staged.
struct Refused {
    error: SqlError,
    /// The failure was in the views' operators, whose failed push rolled
    /// back every pending change of the views it touched.
    in_views: bool,
}

impl From<SqlError> for Refused {
    fn from(error: SqlError) -> Self {
        Refused {
            error,
            in_views: false,
        }
    }
}

/// The writes of one group and what they changed, before the group is
/// durable.
#[derive(Default)]
struct Group {
    staged: Vec<Staged>,
    /// Every view a write of the group pushed changes through, with the
    /// output changes of each write, in order.
    outputs: BTreeMap<RelationId, Vec<Delta>>,
    /// The log sequence number of the group's first record.
    start_seq: u64,
}

impl Engine {
    /// Appends `batches` to `rel` with the source `offsets` they reach,
    /// and moves its watermark; returns, once it is all durable and the
    /// views show it, the number of rows kept (late rows are dropped).
    pub(crate) async fn append_with_offsets(
        &self,
        rel: &Relation,
        batches: Vec<RecordBatch>,
        offsets: &BTreeMap<i32, i64>,
        arrival: &Arrival,
    ) -> SqlResult<usize> {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows == 0 && offsets.is_empty() && (rel.event_time.is_none() || arrival.idle.is_empty())
        {
            return Ok(0);
        }
        let rel = match self.catalog.get(&rel.name) {
            Some(current) if current.id == rel.id => current,
            _ => return Err(dropped(rel)),
        };
        let engine = self
            .me
            .upgrade()
            .ok_or_else(|| SqlError::internal("the engine is shutting down"))?;
        let (reply, answer) = oneshot::channel();
        let write = Write {
            rel,
            batches,
            offsets: offsets.clone(),
            arrival: Arrival {
                row_partitions: arrival.row_partitions.clone(),
                row_offsets: arrival.row_offsets.clone(),
                partitions: arrival.partitions.clone(),
                idle: arrival.idle.clone(),
            },
            reply,
        };
        if self.writers.submit(write) {
            tokio::spawn(async move { engine.lead().await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(SqlError::internal(
                "the group commit ended without answering this write",
            ))
        })
    }

    /// The leader: commits groups of queued writes until none is left.
    async fn lead(&self) {
        let _retire = Retire(self);
        loop {
            let mut pipelines = self.pipelines.write().await;
            // Taken under the lock, so that everything queued while the
            // last group synced (or the lock was busy) joins this group.
            let Some(writes) = self.writers.take() else {
                return;
            };
            let mut todo = VecDeque::from([writes]);
            while let Some(writes) = todo.pop_front() {
                self.commit_group(&mut pipelines, writes, &mut todo).await;
            }
        }
    }

    /// Makes `writes` durable as one group and answers each. Writes that
    /// must be re-run in groups of their own go to the front of `todo`.
    async fn commit_group(
        &self,
        pipelines: &mut Pipelines,
        writes: Vec<Write>,
        todo: &mut VecDeque<Vec<Write>>,
    ) {
        if self.poisoned.load(Ordering::SeqCst) {
            for w in writes {
                w.answer(Err(poisoned_error()));
            }
            return;
        }
        let mut group = Group {
            start_seq: pipelines.next_seq,
            ..Group::default()
        };
        let mut writes = writes.into_iter();
        while let Some(write) = writes.next() {
            match self.stage(pipelines, &write) {
                Ok((record, outputs)) => {
                    for (id, out) in outputs {
                        let outs = group.outputs.entry(id).or_default();
                        outs.extend(out.filter(|o| !o.is_empty()));
                    }
                    group.staged.push(Staged { write, record });
                }
                Err(Refused { error, in_views }) if in_views && !group.outputs.is_empty() => {
                    // The failed push rolled back earlier writes' pending
                    // changes with its own: undo the group and run it again
                    // as the writes before this one, then those after it.
                    let before = self.unstage(pipelines, group);
                    write.answer(Err(error));
                    let after: Vec<Write> = writes.collect();
                    if !after.is_empty() {
                        todo.push_front(after);
                    }
                    if !before.is_empty() {
                        todo.push_front(before);
                    }
                    return;
                }
                Err(Refused { error, .. }) => write.answer(Err(error)),
            }
        }
        if group.staged.is_empty() {
            return;
        }
        // The group's output of each view, checked against its contents as
        // one change: a write's output alone may retract what an earlier
        // write of the group added, which the contents do not hold yet.
        let mut prepared: Vec<(RelationId, Prepared)> = Vec::with_capacity(group.outputs.len());
        let mut unchecked = None;
        for (id, outs) in &group.outputs {
            let Some(pipe) = pipelines.views.get(id) else {
                continue;
            };
            let checked = if outs.is_empty() {
                pipe.prepare(None)
            } else {
                Delta::concat(pipe.dataflow.schema(), outs)
                    .map_err(SqlError::from)
                    .and_then(|out| pipe.prepare(Some(out)))
            };
            match checked {
                Ok(change) => prepared.push((*id, change)),
                Err(e) => {
                    unchecked = Some(e);
                    break;
                }
            }
        }
        if let Some(error) = unchecked {
            let writes = self.unstage(pipelines, group);
            if writes.len() == 1 {
                for w in writes {
                    w.answer(Err(error.clone()));
                }
            } else {
                // Find the write whose output does not check: one a group.
                for w in writes.into_iter().rev() {
                    todo.push_front(vec![w]);
                }
            }
            return;
        }
        let mut commit = Commit::new();
        for s in &mut group.staged {
            commit.absorb(std::mem::take(&mut s.record.commit));
        }
        if let Err(error) = self.commit(commit) {
            // Poisoned by now: nothing of the group is published.
            for w in self.unstage(pipelines, group) {
                w.answer(Err(error.clone()));
            }
            return;
        }
        self.writers
            .writes
            .fetch_add(group.staged.len() as u64, Ordering::Relaxed);
        self.writers.groups.fetch_add(1, Ordering::Relaxed);
        self.publish_wal();
        {
            let _published = self.published.write().await;
            pipelines.finish(prepared);
        }
        let mut event_time = false;
        for s in &group.staged {
            self.add_late(pipelines, &s.write.rel, s.record.late);
            event_time |= s.write.rel.event_time.is_some();
        }
        if event_time {
            self.publish_event_time(pipelines);
        }
        for s in group.staged {
            s.write.answer(Ok(s.record.kept));
        }
    }

    /// Undoes a group that will not be committed: rolls back the pending
    /// changes of every view it touched, restores event-time progress and
    /// the log position. Returns its writes, in order.
    fn unstage(&self, pipelines: &mut Pipelines, group: Group) -> Vec<Write> {
        let touched: Vec<RelationId> = group.outputs.keys().copied().collect();
        pipelines.rollback(&touched);
        let mut writes = Vec::with_capacity(group.staged.len());
        for s in group.staged.into_iter().rev() {
            if let Some(before) = s.record.progress_before {
                pipelines.event_times.insert(s.write.rel.id, before);
            }
            writes.push(s.write);
        }
        writes.reverse();
        pipelines.next_seq = group.start_seq;
        writes
    }

    /// Checks `write`, moves its relation's event time, gives it its log
    /// record and pushes its rows through the views (their changes stay
    /// pending). Returns its storage records and each touched view's
    /// output change. On failure its own changes are undone.
    fn stage(
        &self,
        pipelines: &mut Pipelines,
        write: &Write,
    ) -> Result<(Record, ViewOutputs), Refused> {
        let rel = &write.rel;
        match self.catalog.get(&rel.name) {
            Some(current) if current.id == rel.id => {}
            _ => return Err(dropped(rel).into()),
        }
        // The log record this change becomes, if it changes anything the
        // views see: rows, or the relation's event-time progress.
        let seq = pipelines.next_seq;
        let mut logged = false;
        let mut commit = Commit::new();
        for (p, o) in &write.offsets {
            commit.set_source_offset(rel.id, *p, *o);
        }
        // A source that keeps no rows logs where they are instead.
        let span = if rel.keeps_rows {
            Vec::new()
        } else {
            self.source_span(rel, &write.offsets, &mut commit)?
        };
        let parts: Vec<Delta> = write.batches.iter().cloned().map(Delta::inserts).collect();
        let mut delta = Delta::concat(&rel.schema, &parts).map_err(SqlError::from)?;
        // Event time: drop late rows, move the watermark.
        let mut watermarks = Watermarks::new();
        let mut late = 0;
        let mut progress_before = None;
        if let Some(event) = &rel.event_time {
            let progress = pipelines.event_times.entry(rel.id).or_default();
            let before = progress.clone();
            let admitted = progress.admit(event, &delta.batch, &write.arrival);
            let (keep, dropped) = match admitted {
                Ok(a) => a,
                Err(e) => {
                    *progress = before;
                    return Err(e.into());
                }
            };
            if let (false, Some(keep)) = (rel.keeps_rows, &keep) {
                log_late_rows(rel, keep, &write.arrival, &mut commit);
            }
            if let Some(keep) = keep {
                match delta.filter(&keep) {
                    Ok(d) => delta = d,
                    Err(e) => {
                        *progress = before;
                        return Err(SqlError::from(e).into());
                    }
                }
            }
            late = dropped;
            progress.advance(event, &write.arrival);
            if *progress != before {
                // Logged with the record, so that replay closes windows
                // where this run did, whatever decided the progress.
                match progress.encode() {
                    Ok(bytes) => commit.log_progress(rel.id, seq, bytes),
                    Err(e) => {
                        *progress = before;
                        return Err(e.into());
                    }
                }
                logged = true;
                if let Some(wm) = progress.watermark {
                    if progress.watermark != before.watermark {
                        watermarks.insert(rel.name.clone(), wm);
                    }
                }
                progress_before = Some(before);
            }
        }
        let restore_progress = |pipelines: &mut Pipelines| {
            if let Some(before) = progress_before.clone() {
                pipelines.event_times.insert(rel.id, before);
            }
        };
        let kept = delta.len();
        let mut outputs = Vec::new();
        if !span.is_empty() {
            commit.log_source_span(rel.id, seq, &span);
            logged = true;
        }
        if kept > 0 && rel.keeps_rows {
            if let Err(e) =
                commit.append_table_rows(rel.id, seq, std::slice::from_ref(&delta.batch))
            {
                restore_progress(pipelines);
                return Err(SqlError::from(e).into());
            }
        }
        if kept > 0 || !watermarks.is_empty() {
            outputs = match pipelines.push_through(&rel.name, delta, &watermarks) {
                Ok(o) => o,
                Err(error) => {
                    restore_progress(pipelines);
                    return Err(Refused {
                        error,
                        in_views: true,
                    });
                }
            };
        }
        if logged || kept > 0 {
            pipelines.next_seq = seq + 1;
        }
        let record = Record {
            commit,
            kept,
            late,
            progress_before,
        };
        Ok((record, outputs))
    }

    /// The offsets a batch of source `rel` (one that keeps no rows)
    /// consumed, from its committed position to `offsets`, as the log
    /// records them. A partition that goes back (its topic was created
    /// again, and is read from its beginning) starts there from now on.
    fn source_span(
        &self,
        rel: &Relation,
        offsets: &BTreeMap<i32, i64>,
        commit: &mut Commit,
    ) -> SqlResult<Vec<SpanPart>> {
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        // Durable before this batch was pushed: a source pushes one batch
        // at a time and waits for it.
        let committed: BTreeMap<i32, i64> =
            self.store.source_offsets(rel.id)?.into_iter().collect();
        let mut span = Vec::with_capacity(offsets.len());
        for (&p, &to) in offsets {
            // -1: a partition added after the source, read from its beginning.
            let from = committed.get(&p).copied().unwrap_or(-1);
            if to > from {
                span.push((p, from, to));
            } else if to < from {
                commit.set_source_start(rel.id, p, to);
            }
        }
        Ok(span)
    }

    /// Commits to storage, poisoning the engine if that fails: sled may
    /// hold part of the commit and a row file whose fsync failed may have
    /// lost pages the kernel said were written, so nothing is retried.
    pub(crate) fn commit(&self, commit: Commit) -> SqlResult<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(poisoned_error());
        }
        let store = &self.store;
        let result = blocking(|| store.commit(commit));
        match result {
            Ok(()) => {
                self.publish_wal();
                Ok(())
            }
            Err(e) => {
                self.poisoned.store(true, Ordering::SeqCst);
                tracing::error!(
                    "storage commit failed, refusing further writes until restart: {e}"
                );
                Err(SqlError::from(e))
            }
        }
    }

    /// Publishes `millrace_catalog.wal`.
    fn publish_wal(&self) {
        let syncs = self.store.sync_counts();
        self.registry.publish_wal(WalStatus {
            writes: self.writers.writes.load(Ordering::Relaxed),
            group_commits: self.writers.groups.load(Ordering::Relaxed),
            commits: syncs.commits,
            fsyncs: syncs.fsyncs,
        });
    }
}

fn dropped(rel: &Relation) -> SqlError {
    SqlError::new(
        ErrorKind::UndefinedTable,
        format!("relation \"{}\" was dropped", rel.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;
    use arrow::array::{Array, Int64Array};
    use std::time::Duration;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "millrace-engine-commit-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn sql(engine: &Engine, text: &str) -> SqlResult<Outcome> {
        let mut last = None;
        for stmt in millrace_planner::statement::parse(text)? {
            last = Some(engine.execute(&stmt, None).await?);
        }
        last.ok_or_else(|| SqlError::internal("no statement"))
    }

    /// The single BIGINT of a one-row, one-column query.
    async fn number(engine: &Engine, text: &str) -> i64 {
        let Ok(Outcome::Rows { batches, .. }) = sql(engine, text).await else {
            panic!("{text} returned no rows");
        };
        let column = batches[0].column(0);
        let values = column.as_any().downcast_ref::<Int64Array>().unwrap();
        assert!(values.is_valid(0), "{text} is NULL");
        values.value(0)
    }

    /// Sorted rows of a query, as text.
    async fn rows(engine: &Engine, text: &str) -> Vec<String> {
        let Ok(Outcome::Rows { batches, .. }) = sql(engine, text).await else {
            panic!("{text} returned no rows");
        };
        let mut out: Vec<String> = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(1)
            .map(str::to_string)
            .collect();
        out.sort();
        out
    }

    fn row(rel: &Relation, a: i64, b: i64) -> RecordBatch {
        RecordBatch::try_new(
            rel.schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![a])),
                Arc::new(Int64Array::from(vec![b])),
            ],
        )
        .unwrap()
    }

    /// Starts `writes` appends of `(a, b)` rows while the caller holds the
    /// pipelines lock, and waits until all of them are queued: released,
    /// the lock lets one leader take them all as one group.
    async fn queue_writes(
        engine: &Arc<Engine>,
        writes: &[(i64, i64)],
    ) -> Vec<tokio::task::JoinHandle<SqlResult<usize>>> {
        let rel = engine.relation("t").unwrap();
        let handles: Vec<_> = writes
            .iter()
            .map(|&(a, b)| {
                let engine = engine.clone();
                let rel = rel.clone();
                tokio::spawn(async move { engine.append(&rel, vec![row(&rel, a, b)]).await })
            })
            .collect();
        while engine.writers.lock().waiting.len() < writes.len() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        handles
    }

    async fn setup(name: &str) -> (Arc<Engine>, std::path::PathBuf) {
        let dir = scratch(name);
        let engine = Engine::open(&dir).await.unwrap();
        sql(
            &engine,
            "CREATE TABLE t (a BIGINT, b BIGINT);
             CREATE MATERIALIZED VIEW per_a AS SELECT a, count(*) AS n, sum(b) AS s FROM t GROUP BY a;
             CREATE MATERIALIZED VIEW q AS SELECT a, 100 / b AS q FROM t;
             CREATE MATERIALIZED VIEW per_n AS SELECT n, count(*) AS k FROM per_a GROUP BY n;",
        )
        .await
        .unwrap();
        (engine, dir)
    }

    const TRUTH: [(&str, &str); 3] = [
        (
            "SELECT * FROM per_a",
            "SELECT a, count(*) AS n, sum(b) AS s FROM t GROUP BY a",
        ),
        ("SELECT * FROM q", "SELECT a, 100 / b AS q FROM t"),
        (
            "SELECT * FROM per_n",
            "SELECT n, count(*) AS k FROM (SELECT a, count(*) AS n FROM t GROUP BY a) GROUP BY n",
        ),
    ];

    async fn assert_views_match(engine: &Engine) {
        for (view, truth) in TRUTH {
            assert_eq!(
                rows(engine, view).await,
                rows(engine, truth).await,
                "{view}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_share_one_group_commit() {
        let (engine, dir) = setup("share").await;
        let before = engine.writers.groups.load(Ordering::Relaxed);
        let syncs = engine.store.sync_counts();
        // Writes on the same groups, so that later writes of the group
        // retract what earlier ones added to the contents.
        let writes: Vec<(i64, i64)> = (0..16).map(|i| (i % 3, i + 1)).collect();
        let guard = engine.pipelines.write().await;
        let handles = queue_writes(&engine, &writes).await;
        drop(guard);
        for h in handles {
            assert_eq!(h.await.unwrap().unwrap(), 1);
        }
        assert_eq!(engine.writers.groups.load(Ordering::Relaxed) - before, 1);
        let after = engine.store.sync_counts();
        // One row file synced and one sled flush for all sixteen.
        assert_eq!(after.commits - syncs.commits, 1);
        assert_eq!(after.fsyncs - syncs.fsyncs, 2);
        assert_eq!(number(&engine, "SELECT count(*) FROM t").await, 16);
        assert_eq!(
            number(&engine, "SELECT writes FROM millrace_catalog.wal").await,
            16
        );
        assert_views_match(&engine).await;
        // And the group is what recovery replays.
        drop(engine);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let engine = Engine::open(&dir).await.unwrap();
        assert_eq!(number(&engine, "SELECT count(*) FROM t").await, 16);
        assert_views_match(&engine).await;
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_failing_in_a_view_fails_alone() {
        let (engine, dir) = setup("fails-alone").await;
        // b = 0 divides by zero in view q, after per_a took the row.
        let writes = [(1, 1), (2, 2), (1, 3), (1, 0), (2, 4), (3, 0), (3, 5)];
        let guard = engine.pipelines.write().await;
        let handles = queue_writes(&engine, &writes).await;
        drop(guard);
        let mut answers = Vec::new();
        for h in handles {
            answers.push(h.await.unwrap().map_err(|e| e.kind));
        }
        let division = Err(ErrorKind::DivisionByZero);
        assert_eq!(
            answers,
            vec![Ok(1), Ok(1), Ok(1), division, Ok(1), division, Ok(1)]
        );
        assert_eq!(number(&engine, "SELECT count(*) FROM t").await, 5);
        assert_eq!(number(&engine, "SELECT sum(b) FROM t").await, 15);
        assert_views_match(&engine).await;
        // Nothing stays pending: later writes and a checkpoint are sound.
        let rel = engine.relation("t").unwrap();
        engine.append(&rel, vec![row(&rel, 1, 10)]).await.unwrap();
        engine.checkpoint().await.unwrap();
        assert_views_match(&engine).await;
        drop(engine);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let engine = Engine::open(&dir).await.unwrap();
        assert_eq!(number(&engine, "SELECT count(*) FROM t").await, 6);
        assert_views_match(&engine).await;
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_fails_the_whole_group_and_poisons() {
        let (engine, dir) = setup("poison").await;
        let rel = engine.relation("t").unwrap();
        engine.append(&rel, vec![row(&rel, 1, 1)]).await.unwrap();
        let published = rows(&engine, "SELECT * FROM per_a").await;
        // The table's row file becomes something no append can write.
        let file = dir.join("rows").join(rel.id.to_string());
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let guard = engine.pipelines.write().await;
        let handles = queue_writes(&engine, &[(1, 2), (2, 3), (3, 4)]).await;
        drop(guard);
        for h in handles {
            let e = h.await.unwrap().unwrap_err();
            assert_eq!(e.kind, ErrorKind::IoError, "{e}");
        }
        // Readers still see the last durable views, nothing of the group.
        assert_eq!(rows(&engine, "SELECT * FROM per_a").await, published);
        assert_eq!(rows(&engine, "SELECT * FROM q").await.len(), 1);
        // Writes and checkpoints are refused from now on.
        let e = engine
            .append(&rel, vec![row(&rel, 5, 5)])
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::IoError);
        assert!(engine.checkpoint().await.is_err());
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
