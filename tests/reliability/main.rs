//! The reliability battery: `tandem serve`, in every layout, under the
//! clients and faults that production networks produce. Each case asserts a
//! figure (bytes back, connections counted, memory, CPU time), not merely
//! that nothing crashed. The README's "Guarantees" section names the case
//! behind each promise.
//!
//! One module per case:
//! - `descriptors`: running out of file descriptors (case 1);
//! - `unread`: clients that send and never read (case 2);
//! - `concurrency`: 5000 simultaneous connections (case 3);
//! - `resets`: clients that reset mid-echo (case 4);
//! - `shutdown_load`: SIGTERM while clients stream (case 5);
//! - `size`: a 256 MiB stream (case 6);
//! - `bursts`: more clients at once than the hand-off holds (case 7);
//! - `slow`: slowloris and silent clients (case 8);
//! - `per_ip`: `--max-connections-per-ip` (case 9);
//! - `properties`: arbitrary writes, reads and half-closes (case 11);
//! - `budget`: streaming clients at the largest buffers (case 13);
//! - `soak`: a minute of mixed load, memory and descriptors sampled
//!   (case 12; ignored by default, run by hand: see its docs);
//! - `shedding`: slow clients make room for new ones when every slot is
//!   taken (case 13);
//! - `orphans`: closing clients that do not read leaves no orphaned
//!   socket (case 14).
//!
//! Case 10, bad configuration, is the invalid-value table in `tests/cli.rs`.

mod clients;
#[path = "../common/mod.rs"]
mod common;

mod budget;
mod bursts;
mod concurrency;
mod descriptors;
mod orphans;
mod per_ip;
mod properties;
mod resets;
mod shedding;
mod shutdown_load;
mod size;
mod slow;
mod soak;
mod unread;
