//! The fair queue of the admitted jobs: whose turn is next, and a thread's
//! turn at it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::job::Slices;

/// Gives the job whose turn it is one slice on the calling thread; false
/// when no job is waiting for a turn, and the thread leaves the queue.
pub(super) fn take_turn(turns: &Mutex<Turns>) -> bool {
    let Some(mut turn) = lock(turns).next() else {
        return false;
    };
    let started = Instant::now();
    let over = turn.job.run_slice();
    let used = started.elapsed();
    let ended = lock(turns).end(turn, used, over);
    // Outside the lock: it counts itself, and frees its slot.
    drop(ended);
    true
}

/// The queue, also after a panic under its lock: nothing under it runs a
/// job's work or drops a job, and each step leaves it whole.
pub(super) fn lock(turns: &Mutex<Turns>) -> MutexGuard<'_, Turns> {
    turns.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The admitted jobs waiting for a thread, and whose turn is next.
///
/// Start-time fair queuing over keys. A key's finish tag is the virtual
/// time its latest turn ended at: that turn's start tag plus the compute
/// time it took. A key put in line is tagged with the virtual time its next
/// turn may start at: the later of its finish tag and the queue's virtual
/// clock. The earliest tag goes first, ties in the order they came.
///
/// The clock is the start tag of the latest turn given. A turn tagged
/// from the clock (its key had no finish tag ahead of it) also moves the
/// clock on as it ends, by its share of the time it used: that time
/// divided among it and the keys waiting in line, as if they had shared
/// the thread. Without it, turns tagged at the clock would start at the
/// clock and leave it there: a stream of newcomers, or of keys back after
/// a pause, would hold back for ever a key tagged a slice ahead. A key in
/// line is passed only by turns tagged no later than it, and once the
/// clock reaches its tag every newcomer goes after it. So, per slice it
/// gets, a heavy key waits for the turns in line before it, for about one
/// slice's worth of compute time of each key tagged from its finish tag
/// (each turn moves it on by the time the turn used), and for about one
/// slice's worth, times the keys in line, of those tagged from the clock,
/// all together: never for ever.
///
/// A key's finish tag is remembered while it is ahead of the clock, also
/// once nothing of the key waits or runs: a connection that has one job
/// at a time comes back with what it used, behind those that used less.
/// Once the clock passes it, the key is forgotten: it would be tagged at
/// the clock anyway, with no credit saved up. The state is bounded by the
/// admitted jobs and the keys whose finish tag is ahead of the clock. A
/// job that is a key of its own never comes back, and is forgotten at once.
pub(super) struct Turns {
    /// Keys with a job waiting and none running, by tag, then arrival.
    pub(super) line: BTreeMap<(u64, u64), Key>,
    pub(super) keys: HashMap<Key, KeyTurns>,
    /// The keys with nothing waiting or running, by finish tag: each is
    /// forgotten as the clock reaches it.
    pub(super) remembered: BTreeSet<(u64, Key)>,
    /// The virtual clock, in nanoseconds of compute time.
    pub(super) clock: u64,
    /// Numbers the jobs, and the tags in order of arrival.
    pub(super) count: u64,
    /// Threads taking turns now, and the most there may be.
    pub(super) taking: usize,
    pub(super) threads: usize,
    pub(super) stopped: bool,
}

/// Whose a job is: a caller's key, or the job's own (numbered as jobs are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Key {
    Caller(u64),
    Own(u64),
}

/// Where a job is: its key, and its number.
pub(super) type Place = (Key, u64);

/// One key's place in the queue.
#[derive(Default)]
pub(super) struct KeyTurns {
    /// Its waiting jobs, by number, oldest first; the first may have had
    /// slices already.
    pub(super) waiting: VecDeque<(u64, Box<dyn Slices>)>,
    /// Its finish tag: the virtual time its latest turn ended at; none
    /// before its first.
    pub(super) ended: Option<u64>,
    /// One of its jobs is having a turn now.
    pub(super) running: bool,
    /// Its tag in the line, while it is there.
    pub(super) tag: Option<(u64, u64)>,
    /// Its tag is the clock's, not its finish tag: its turn moves the
    /// clock on as it ends.
    pub(super) from_clock: bool,
}

impl KeyTurns {
    /// Nothing of it waits or runs.
    pub(super) fn is_idle(&self) -> bool {
        !self.running && self.waiting.is_empty()
    }
}

/// A job's turn on a thread.
pub(super) struct Turn {
    pub(super) place: Place,
    /// The turn's tag: the virtual time it started at.
    pub(super) start: u64,
    /// Tagged from the clock: it moves the clock on as it ends.
    pub(super) from_clock: bool,
    pub(super) job: Box<dyn Slices>,
}

impl Turns {
    pub(super) fn new(threads: usize) -> Turns {
        Turns {
            line: BTreeMap::new(),
            keys: HashMap::new(),
            remembered: BTreeSet::new(),
            clock: 0,
            count: 0,
            taking: 0,
            threads,
            stopped: false,
        }
    }

    /// Queues `job` for `key` (none: its own), and says whether a thread
    /// should start taking turns. Refused, with the job, once stopped.
    pub(super) fn push(
        &mut self,
        key: Option<u64>,
        job: Box<dyn Slices>,
    ) -> Result<(Place, bool), Box<dyn Slices>> {
        if self.stopped {
            return Err(job);
        }
        let id = self.number();
        let key = key.map_or(Key::Own(id), Key::Caller);
        let state = self.keys.entry(key).or_default();
        if state.is_idle()
            && let Some(ended) = state.ended
        {
            // Back while remembered: it waits again, and is no longer
            // forgotten with the clock.
            self.remembered.remove(&(ended, key));
        }
        state.waiting.push_back((id, job));
        self.enqueue(key);
        let start = self.taking < self.threads && !self.line.is_empty();
        if start {
            self.taking += 1;
        }
        Ok(((key, id), start))
    }

    /// The next number, for a job or a tag.
    pub(super) fn number(&mut self) -> u64 {
        let number = self.count;
        self.count = self.count.wrapping_add(1);
        number
    }

    /// Puts `key` in line, if it has a job waiting, none running, and is not
    /// in line already.
    pub(super) fn enqueue(&mut self, key: Key) {
        let order = self.number();
        let clock = self.clock;
        let Some(state) = self.keys.get_mut(&key) else {
            return;
        };
        if state.running || state.tag.is_some() || state.waiting.is_empty() {
            return;
        }
        let (start, from_clock) = match state.ended {
            Some(ended) if ended >= clock => (ended, false),
            _ => (clock, true),
        };
        let tag = (start, order);
        state.tag = Some(tag);
        state.from_clock = from_clock;
        self.line.insert(tag, key);
    }

    /// Remembers `key`'s finish tag if nothing of it waits or runs and the
    /// tag is ahead of the clock; forgets the key if it is idle otherwise.
    pub(super) fn settle(&mut self, key: Key) {
        let Some(state) = self.keys.get(&key) else {
            return;
        };
        if !state.is_idle() {
            return;
        }
        match state.ended {
            Some(ended) if ended > self.clock && matches!(key, Key::Caller(_)) => {
                self.remembered.insert((ended, key));
            }
            _ => {
                self.keys.remove(&key);
            }
        }
    }

    /// Moves the clock on to `to`, if it is behind, and forgets the keys it
    /// passes.
    pub(super) fn advance(&mut self, to: u64) {
        self.clock = self.clock.max(to);
        while let Some(&(ended, key)) = self.remembered.first() {
            if ended > self.clock {
                break;
            }
            self.remembered.pop_first();
            self.keys.remove(&key);
        }
    }

    /// The next turn: the first job of the first key in line. None when no
    /// job waits for one (or the queue has stopped): the thread asking
    /// leaves.
    pub(super) fn next(&mut self) -> Option<Turn> {
        while !self.stopped {
            let Some(((start, _), key)) = self.line.pop_first() else {
                break;
            };
            // A key in line has a job waiting; `cancel` takes it out of
            // line with its last job.
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            state.tag = None;
            let Some((id, job)) = state.waiting.pop_front() else {
                continue;
            };
            state.running = true;
            let from_clock = state.from_clock;
            self.advance(start);
            return Some(Turn {
                place: (key, id),
                start,
                from_clock,
                job,
            });
        }
        self.taking -= 1;
        None
    }

    /// Ends `turn`, which took `used` on the clock. The job goes back to
    /// the front of its key's jobs, unless it is `over`, its caller has
    /// gone, or the queue has stopped: then it is handed back, to be
    /// dropped outside the lock.
    pub(super) fn end(
        &mut self,
        turn: Turn,
        used: Duration,
        over: bool,
    ) -> Option<Box<dyn Slices>> {
        let Turn {
            place: (key, id),
            start,
            from_clock,
            mut job,
        } = turn;
        let used = u64::try_from(used.as_nanos()).unwrap_or(u64::MAX);
        let ended = start.saturating_add(used);
        if from_clock {
            // Its share of the time it used, as if it had shared the
            // thread with each key waiting in line; at least a nanosecond,
            // so that each such turn moves time forward.
            let sharing = u64::try_from(self.line.len()).unwrap_or(u64::MAX);
            let share = (used / sharing.saturating_add(1)).max(1);
            self.advance(self.clock.saturating_add(share));
        }
        let state = self.keys.entry(key).or_default();
        state.running = false;
        state.ended = Some(ended);
        let handed_back = if over || self.stopped {
            Some(job)
        } else if job.is_abandoned() {
            job.cancel();
            Some(job)
        } else {
            state.waiting.push_front((id, job));
            None
        };
        self.enqueue(key);
        self.settle(key);
        handed_back
    }

    /// Takes the job at `place` out of the queue if it waits there, counted
    /// as cancelled: its caller has gone.
    pub(super) fn cancel(&mut self, (key, id): Place) -> Option<Box<dyn Slices>> {
        let state = self.keys.get_mut(&key)?;
        let at = state.waiting.iter().position(|(queued, _)| *queued == id)?;
        let (_, mut job) = state.waiting.remove(at)?;
        if state.waiting.is_empty()
            && let Some(tag) = state.tag.take()
        {
            self.line.remove(&tag);
        }
        self.settle(key);
        job.cancel();
        Some(job)
    }

    /// Stops giving turns: the waiting jobs are handed back, to be dropped
    /// outside the lock, and the threads leave at their next turn.
    pub(super) fn stop(&mut self) -> Vec<Box<dyn Slices>> {
        self.stopped = true;
        self.line.clear();
        self.remembered.clear();
        let mut waiting = Vec::new();
        for state in self.keys.values_mut() {
            state.tag = None;
            waiting.extend(state.waiting.drain(..).map(|(_, job)| job));
        }
        self.keys.retain(|_, state| state.running);
        waiting
    }
}
