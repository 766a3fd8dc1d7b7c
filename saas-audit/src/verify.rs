//! Chain verification, shared by the database walk and offline export checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::CheckpointSigner;
use crate::event::StoredEvent;

/// A signed chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The chain.
    pub chain: String,
    /// The head's position.
    pub seq: i64,
    /// The head's hash (hex).
    pub hash: String,
    /// When it was signed (canonical time).
    pub signed_at: String,
    /// Which key signed it.
    pub key_id: String,
    /// HMAC-SHA256 signature (hex).
    pub signature: String,
}

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChainProblem {
    /// The stored hash is not the hash of the stored event.
    HashMismatch {
        /// Where.
        seq: i64,
    },
    /// The event does not point at the previous event's hash.
    BrokenLink {
        /// Where.
        seq: i64,
    },
    /// A position is missing (or out of order).
    Gap {
        /// The position expected next.
        expected: i64,
        /// The position found.
        found: i64,
    },
    /// The chain ends before a checkpoint (or the chain head) says it should.
    MissingTail {
        /// The last position present.
        last_seq: i64,
        /// The position the checkpoint or head vouches for.
        expected_seq: i64,
    },
    /// A checkpoint names a hash the event at its position does not have.
    CheckpointMismatch {
        /// Where.
        seq: i64,
    },
    /// Rows were pruned, but the chain holds no `audit.pruned` event vouching
    /// for that prune.
    UnrecordedPrune {
        /// The last position the prune claims to cover.
        up_to_seq: i64,
    },
    /// A checkpoint's signature does not verify.
    BadCheckpointSignature {
        /// Where.
        seq: i64,
    },
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The chain.
    pub chain: String,
    /// Events checked.
    pub checked: u64,
    /// The last position checked.
    pub last_seq: Option<i64>,
    /// The newest checkpoint considered.
    pub checkpoint_seq: Option<i64>,
    /// The first problem, if any.
    pub problem: Option<ChainProblem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.problem.is_none()
    }
}

/// Checks each event's stored hash against its content (and its stored
/// canonical bytes, where `canonical` holds them: one per event, or none at
/// all), split over the available cores.
fn parallel_hash_checks(events: &[StoredEvent], canonical: &[Option<Vec<u8>>]) -> Vec<bool> {
    let pairs: Vec<(&StoredEvent, Option<&[u8]>)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e, canonical.get(i).and_then(Option::as_deref)))
        .collect();
    on_every_core(&pairs, |part| {
        let mut buf = Vec::with_capacity(1024);
        part.iter()
            .map(|(e, c)| e.hash_matches(*c, &mut buf))
            .collect::<Vec<_>>()
    })
}

/// `work` over `items` split in one contiguous part per core, the results
/// put back in the items' order. Small inputs stay on the calling thread.
/// `work` must give one result per item.
pub(crate) fn on_every_core<'a, T: Sync, R: Send>(
    items: &'a [T],
    work: impl Fn(&'a [T]) -> Vec<R> + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if threads < 2 || items.len() < 256 {
        return work(items);
    }
    let chunk = items.len().div_ceil(threads);
    let work = &work;
    off_the_executor(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = items
                .chunks(chunk)
                .map(|part| (part, s.spawn(move || work(part))))
                .collect();
            // A part whose thread failed is done again here, so no result
            // is ever missing.
            handles
                .into_iter()
                .flat_map(|(part, h)| h.join().unwrap_or_else(|_| work(part)))
                .collect()
        })
    })
}

/// Runs `work`, which keeps this thread busy for milliseconds, telling
/// tokio first when this is a worker of its multi-threaded runtime, so that
/// the worker's other tasks move to another thread meanwhile instead of
/// waiting for it. Elsewhere (a `current_thread` runtime, which has no other
/// thread to move them to, or no runtime at all) `work` simply runs.
fn off_the_executor<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Walks events in order and remembers the first problem.
pub(crate) struct ChainVerifier {
    chain: String,
    first_seq: i64,
    expected_seq: i64,
    prev: String,
    /// A part of a walk split over several connections ([`Self::part`]):
    /// its first event's link is taken as it is, to be checked when the
    /// part is joined to the walk before it.
    part: bool,
    /// That first event's link (as written).
    part_anchor: Option<Vec<u8>>,
    checked: u64,
    last_seq: Option<i64>,
    problem: Option<ChainProblem>,
    checkpoints: BTreeMap<i64, Checkpoint>,
}

impl ChainVerifier {
    /// Starts at `first_seq`, whose predecessor's hash is `anchor` (hex).
    pub(crate) fn new(
        chain: String,
        first_seq: i64,
        anchor: String,
        checkpoints: Vec<Checkpoint>,
    ) -> Self {
        Self {
            chain,
            first_seq,
            expected_seq: first_seq,
            prev: anchor,
            part: false,
            part_anchor: None,
            checked: 0,
            last_seq: None,
            problem: None,
            checkpoints: checkpoints.into_iter().map(|c| (c.seq, c)).collect(),
        }
    }

    /// Feeds events in order, recomputing their hashes on every core first;
    /// `canonical` holds, for each event, the bytes stored as hashed if any
    /// (or is empty), which must be exactly the event's canonical form.
    /// Returns false once a problem was found.
    pub(crate) fn feed_all(
        &mut self,
        events: &[StoredEvent],
        canonical: &[Option<Vec<u8>>],
    ) -> bool {
        let ok = parallel_hash_checks(events, canonical);
        events
            .iter()
            .zip(ok)
            .all(|(ev, hash_ok)| self.feed(ev, hash_ok))
    }

    fn feed(&mut self, ev: &StoredEvent, hash_ok: bool) -> bool {
        self.feed_link(ev.seq, ev.prev_hash.as_bytes(), &ev.hash, hash_ok)
    }

    /// Feeds the next event by its position, its link and its stored hash
    /// (both hex; the link as written, which is compared with hashes in
    /// hex only), and whether that hash is the hash of its content; returns
    /// false once a problem was found.
    pub(crate) fn feed_link(
        &mut self,
        seq: i64,
        prev_hash: &[u8],
        hash: &str,
        hash_ok: bool,
    ) -> bool {
        if self.problem.is_some() {
            return false;
        }
        let problem = if seq != self.expected_seq {
            Some(ChainProblem::Gap {
                expected: self.expected_seq,
                found: seq,
            })
        } else if !hash_ok {
            Some(ChainProblem::HashMismatch { seq })
        } else if self.part && self.part_anchor.is_none() {
            self.part_anchor = Some(prev_hash.to_vec());
            None
        } else if prev_hash != self.prev.as_bytes() {
            Some(ChainProblem::BrokenLink { seq })
        } else if self.checkpoints.get(&seq).is_some_and(|c| c.hash != hash) {
            Some(ChainProblem::CheckpointMismatch { seq })
        } else {
            None
        };
        if problem.is_some() {
            self.problem = problem;
            return false;
        }
        self.checked += 1;
        self.last_seq = Some(seq);
        self.expected_seq = seq + 1;
        self.prev.clear();
        self.prev.push_str(hash);
        true
    }

    /// The position the walk starts at.
    pub(crate) fn first_seq(&self) -> i64 {
        self.first_seq
    }

    /// The chain's name.
    pub(crate) fn chain(&self) -> &str {
        &self.chain
    }

    /// The position expected next.
    pub(crate) fn next_seq(&self) -> i64 {
        self.expected_seq
    }

    /// Whether a problem was found.
    pub(crate) fn problem_found(&self) -> bool {
        self.problem.is_some()
    }

    /// A verifier for the part of this walk that starts at `first_seq`,
    /// with the same checkpoints; see [`Self::join`].
    pub(crate) fn part(&self, first_seq: i64) -> Self {
        Self {
            chain: self.chain.clone(),
            first_seq,
            expected_seq: first_seq,
            prev: String::new(),
            part: true,
            part_anchor: None,
            checked: 0,
            last_seq: None,
            problem: None,
            checkpoints: self.checkpoints.clone(),
        }
    }

    /// Takes `part` as the continuation of this walk when that is exactly
    /// what walking its events here would have done: nothing was found wrong
    /// so far or in the part, the part starts at the position expected next,
    /// and its first event links to the last hash. (A part that ends early
    /// leaves the next part, or the end of the walk, to find the hole.)
    /// Returns false, and changes nothing, otherwise, an empty part
    /// included: the caller then walks on from [`Self::next_seq`] itself.
    pub(crate) fn join(&mut self, part: Self) -> bool {
        let continues = self.problem.is_none()
            && part.problem.is_none()
            && part.first_seq == self.expected_seq
            && part.part_anchor.as_deref() == Some(self.prev.as_bytes());
        if !continues {
            return false;
        }
        self.checked += part.checked;
        self.last_seq = part.last_seq;
        self.expected_seq = part.expected_seq;
        self.prev = part.prev;
        true
    }

    /// Takes a checkpoint read after the events it covers (an export ends
    /// with one): `hash_at` is the hash (hex) of the event fed without a
    /// problem at its position, if there was one. A mismatch there is
    /// reported as the walk in order would have: before any problem found
    /// further on.
    pub(crate) fn checkpoint_after(&mut self, c: Checkpoint, hash_at: Option<&str>) {
        let earlier_mismatch = matches!(
            self.problem,
            Some(ChainProblem::CheckpointMismatch { seq }) if seq <= c.seq
        );
        if let Some(hash) = hash_at
            && hash != c.hash
            && !earlier_mismatch
        {
            self.problem = Some(ChainProblem::CheckpointMismatch { seq: c.seq });
            self.checked = u64::try_from(c.seq - self.first_seq).unwrap_or(0);
            self.last_seq = (c.seq > self.first_seq).then(|| c.seq - 1);
        }
        self.checkpoints.insert(c.seq, c);
    }

    /// Ends the walk: the chain must reach the newest checkpoint and
    /// `vouched_seq` (the chain head), and checkpoint signatures must verify.
    pub(crate) fn finish(
        mut self,
        vouched_seq: Option<i64>,
        signer: Option<&CheckpointSigner>,
    ) -> VerifyReport {
        let newest = self.checkpoints.keys().next_back().copied();
        if self.problem.is_none()
            && let Some(signer) = signer
        {
            {
                for c in self.checkpoints.values() {
                    let sig = hex::decode(&c.signature).unwrap_or_default();
                    if !(c.key_id == signer.key_id()
                        && signer.verify(&c.chain, c.seq, &c.hash, &c.signed_at, &sig))
                    {
                        self.problem = Some(ChainProblem::BadCheckpointSignature { seq: c.seq });
                        break;
                    }
                }
            }
        }
        if self.problem.is_none() {
            let last = self.last_seq.unwrap_or(self.expected_seq - 1);
            let expected = newest.into_iter().chain(vouched_seq).max();
            if let Some(expected) = expected.filter(|e| *e > last) {
                self.problem = Some(ChainProblem::MissingTail {
                    last_seq: last,
                    expected_seq: expected,
                });
            }
        }
        VerifyReport {
            chain: self.chain,
            checked: self.checked,
            last_seq: self.last_seq,
            checkpoint_seq: newest,
            problem: self.problem,
        }
    }
}

/// Verifies a run of events already in memory (read from a sink or an export),
/// starting at the first event's position, whose predecessor's hash is
/// `anchor` (hex; `None` for the start of a chain).
#[must_use]
pub fn verify_events(anchor: Option<&str>, events: &[StoredEvent]) -> VerifyReport {
    let chain = events.first().map(|e| e.chain.clone()).unwrap_or_default();
    let first = events.first().map_or(1, |e| e.seq);
    let anchor = anchor.map_or_else(|| hex::encode(crate::event::GENESIS), str::to_owned);
    let mut v = ChainVerifier::new(chain, first, anchor, Vec::new());
    v.feed_all(events, &[]);
    v.finish(None, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A runtime with one worker: a task that held it without telling tokio
    /// would leave every other task waiting.
    fn one_worker() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap()
    }

    #[test]
    fn long_work_on_a_runtime_worker_lets_the_workers_other_tasks_run() {
        let ran_meanwhile = one_worker().block_on(async {
            tokio::spawn(async {
                let (tx, rx) = mpsc::channel();
                // Queued on this same worker, behind the task running now.
                tokio::spawn(async move { tx.send(()).ok() });
                // The work waits for that task: it can end only if the task
                // ran while the work held the worker's thread.
                off_the_executor(|| rx.recv_timeout(Duration::from_secs(60)).is_ok())
            })
            .await
            .unwrap()
        });
        assert!(ran_meanwhile);
    }

    #[test]
    fn long_work_runs_as_is_on_a_current_thread_runtime_or_none() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(async { off_the_executor(|| 7) }), 7);
        assert_eq!(off_the_executor(|| 8), 8);
        // And the hashing spread over the cores gives every result, in order.
        let items: Vec<u32> = (0..10_000).collect();
        let doubled = rt
            .block_on(async { on_every_core(&items, |part| part.iter().map(|i| i * 2).collect()) });
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
    }
}
